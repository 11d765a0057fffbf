"""Encrypted, content-addressed blob storage: chunked AES-256-GCM, constant memory, range reads.

Every distinct plaintext is stored once, named by its SHA-256, at
``root/blobs/ab/cd/<sha256hex>``; uploads are written to ``root/tmp/`` first and linked into
place on commit (so a reader never sees half a blob, and an abandoned upload leaves nothing).

File format (all integers big-endian)::

    offset size  field
    0      8     magic b"JFBLOB1\\0"
    8      2     format version (1)
    10     2     reserved (0)
    12     4     chunk size C (plaintext bytes per chunk; the last chunk may be shorter)
    16     16    file id (random)
    32     8     plaintext size
    40     32    plaintext SHA-256 (raw; equals the file's name)
    72     32    header MAC: HMAC-SHA256(mac key, bytes 0..72)
    104    72    key slot 0: master key id (32 bytes ASCII, NUL-padded; all zero = empty)
                             || AES key wrap (RFC 3394) of the 32-byte data key (40 bytes)
    176    72    key slot 1: the same; used while the data key is re-wrapped under a new master key
    248          chunk 0, chunk 1, ... each nonce (12) || ciphertext || GCM tag (16)

There are max(1, ceil(size / C)) chunks (a zero-byte blob is one empty, final chunk). From the
32-byte data key, HKDF-SHA256 (info ``jiefen/blob/v1``) derives the AES-256-GCM chunk key and
the HMAC key. Each chunk's associated data is::

    file id (16) || chunk index (u64) || final flag (1 byte: 1 for the last chunk)
        || SHA-256(bytes 0..32 of the header)

so a chunk moved to another position, another file or another chunk size fails its tag, and a
blob cut short lacks its final chunk. Size and hash are only known at the end of a single-pass
upload, so they are covered by the header MAC rather than by the chunks; reads check the MAC,
that the hash equals the file's name and that the file's length matches the size, then decrypt
only the chunks a range needs. The key slots are outside both MAC and chunk data so that
rotation rewrites 72 bytes and never touches the chunks; a slot is authenticated by the key
wrap's own integrity check and by the MAC (a foreign data key fails it).

Rotation is crash-safe without a journal: the data key is wrapped under the new master key into
the free slot, fsynced, and only then the old slot is cleared and fsynced; a reader tries every
slot whose master key it has, so at every instant one slot opens the file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import io
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from portal.errors import DomainError, NotFound
from portal.i18n import _l

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

MAGIC = b"JFBLOB1\0"
VERSION = 1
MiB = 1024 * 1024
DEFAULT_CHUNK_SIZE = 64 * 1024
DEFAULT_MAX_SIZE = 200 * MiB
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 16 * MiB
KEY_ID_LENGTH = 32
NONCE_SIZE = 12
TAG_SIZE = 16
CHUNK_OVERHEAD = NONCE_SIZE + TAG_SIZE

_FIXED = struct.Struct(">8sHHI16s")  # magic, version, reserved, chunk size, file id: 0..32
_SEALED = struct.Struct(">Q32s")  # plaintext size, SHA-256: 32..72
_SLOT = struct.Struct(">32s40s")  # key id, wrapped data key
FIXED_END = _FIXED.size  # 32
SEALED_END = FIXED_END + _SEALED.size  # 72
MAC_END = SEALED_END + 32  # 104
SLOT_OFFSETS = (MAC_END, MAC_END + _SLOT.size)  # 104, 176
HEADER_SIZE = MAC_END + 2 * _SLOT.size  # 248
_EMPTY_SLOT = bytes(_SLOT.size)

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_KEY_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,32}")
_TMP_SUFFIX = ".part"
_WRITEV_BATCH = 64  # iovecs per writev call (IOV_MAX is 1024 on Linux)
_READ_BATCH = 16  # chunks per pread when streaming
_WRITEBACK_STEP = 8 * 1024 * 1024
_FADVISE: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)


class BlobError(Exception):
    """A stored blob cannot be read: an operator's problem (disk, keys), never the user's."""


class BlobCorrupted(BlobError):
    """The blob failed authentication: tampered with, truncated, reordered or misnamed."""


class MasterKeyMissing(BlobError):
    """None of the master keys a blob is wrapped under is configured."""


class RotationIncomplete(BlobError):
    """``rotate`` re-wrapped what it could; these blobs failed (their errors are logged here)."""

    def __init__(self, rewrapped: int, failed: dict[str, str]) -> None:
        super().__init__(f"{len(failed)} blob(s) not re-wrapped: {failed}")
        self.rewrapped = rewrapped
        self.failed = failed


class BlobNotFound(NotFound):
    """No blob with this SHA-256 is stored."""


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    created: bool  # False when an identical blob was stored already (deduplicated)


def parse_master_keys(text: str) -> dict[str, bytes]:
    """``"id1:<base64>,id2:<base64>"`` (each key 32 random bytes) -> ``{"id1": b"..."}``."""
    keys: dict[str, bytes] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        key_id = key_id.strip()
        if not sep or not _KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"master key entry {key_id!r}: expected id:base64 (id ≤ 32 chars)")
        if key_id in keys:
            raise ValueError(f"master key id {key_id!r} given twice")
        encoded = encoded.strip()
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            raise ValueError(f"master key {key_id!r} is not base64") from None
        if len(key) != 32:
            raise ValueError(f"master key {key_id!r} must be 32 bytes, not {len(key)}")
        keys[key_id] = key
    return keys


def generate_master_key() -> str:
    """A new master key, base64url, for ``parse_master_keys`` (e.g. printed by the CLI)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _derive(data_key: bytes) -> tuple[bytes, bytes]:
    """(AES-256-GCM chunk key, HMAC key) from a file's data key."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"jiefen/blob/v1").derive(
        data_key
    )
    return okm[:32], okm[32:]


def _header_mac(mac_key: bytes, header: bytes) -> bytes:
    return hmac.new(mac_key, header[:SEALED_END], hashlib.sha256).digest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, parts: list[bytes]) -> None:
    total = sum(len(p) for p in parts)
    written = os.writev(fd, parts)
    if written < total:  # rare (signal, nearly full disk): finish the rest byte-exactly
        rest = memoryview(b"".join(parts))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


@dataclass(frozen=True)
class _Header:
    chunk_size: int
    file_id: bytes
    size: int
    sha256: bytes
    mac: bytes
    slots: tuple[tuple[str, bytes], tuple[str, bytes]]  # (master key id or "", wrapped key)

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.size // self.chunk_size))

    @property
    def file_length(self) -> int:
        return HEADER_SIZE + self.chunk_count * CHUNK_OVERHEAD + self.size


def _parse_header(raw: bytes, name: str) -> _Header:
    if len(raw) < HEADER_SIZE:
        raise BlobCorrupted(f"blob {name}: header truncated")
    magic, version, _reserved, chunk_size, file_id = _FIXED.unpack_from(raw, 0)
    if magic != MAGIC:
        raise BlobCorrupted(f"blob {name}: not a Jiefen blob (bad magic)")
    if version != VERSION:
        raise BlobCorrupted(f"blob {name}: unknown format version {version}")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise BlobCorrupted(f"blob {name}: implausible chunk size {chunk_size}")
    size, sha = _SEALED.unpack_from(raw, FIXED_END)
    slots: list[tuple[str, bytes]] = []
    for offset in SLOT_OFFSETS:
        raw_id, wrapped = _SLOT.unpack_from(raw, offset)
        try:
            key_id = raw_id.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            key_id = "\ufffd"  # never a configured id: the slot is ignored
        slots.append((key_id, wrapped))
    return _Header(
        chunk_size=chunk_size,
        file_id=file_id,
        size=size,
        sha256=sha,
        mac=raw[SEALED_END:MAC_END],
        slots=(slots[0], slots[1]),
    )


class _OpenBlob:
    """An open, authenticated blob: decrypts chunks on demand. Not thread-safe; close it."""

    def __init__(self, fd: int, name: str, header: _Header, chunk_key: bytes) -> None:
        self.fd = fd
        self.name = name
        self.header = header
        self.size = header.size
        self.chunk_size = header.chunk_size
        self.count = header.chunk_count
        self._aead = AESGCM(chunk_key)
        self._digest = hashlib.sha256(
            _FIXED.pack(MAGIC, VERSION, 0, header.chunk_size, header.file_id)
        ).digest()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)

    def _plain_length(self, index: int) -> int:
        if index < self.count - 1:
            return self.chunk_size
        return self.size - (self.count - 1) * self.chunk_size

    def _offset(self, index: int) -> int:
        return HEADER_SIZE + index * (self.chunk_size + CHUNK_OVERHEAD)

    def _decrypt(self, index: int, sealed: memoryview) -> bytes:
        final = index == self.count - 1
        aad = self.header.file_id + struct.pack(">QB", index, final) + self._digest
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
        except InvalidTag:
            raise BlobCorrupted(
                f"blob {self.name}: chunk {index} failed authentication "
                "(tampered with, reordered or truncated)"
            ) from None

    def chunk(self, index: int) -> bytes:
        """The plaintext of one chunk."""
        for plain in self.chunks(index, index):
            return plain
        raise AssertionError("unreachable")

    def chunks(self, first: int, last: int) -> Iterator[bytes]:
        """Plaintext of chunks ``first..last`` (inclusive), read ``_READ_BATCH`` at a time."""
        index = first
        while index <= last:
            stop = min(last, index + _READ_BATCH - 1)
            start_at = self._offset(index)
            length = self._offset(stop) + CHUNK_OVERHEAD + self._plain_length(stop) - start_at
            data = os.pread(self.fd, length, start_at)
            if len(data) != length:
                raise BlobCorrupted(f"blob {self.name}: truncated at chunk {index}")
            view = memoryview(data)
            position = 0
            for k in range(index, stop + 1):
                sealed_length = CHUNK_OVERHEAD + self._plain_length(k)
                yield self._decrypt(k, view[position : position + sealed_length])
                position += sealed_length
            index = stop + 1

    def batches(self, start: int, end: int) -> Iterator[bytes]:
        """Plaintext ``[start, end)`` in pieces of about ``_READ_BATCH`` chunks."""
        if start >= end:
            return
        size = self.chunk_size
        first, last = start // size, (end - 1) // size
        pieces: list[bytes] = []
        for index, plain in enumerate(self.chunks(first, last), start=first):
            lo = start - index * size if index == first else 0
            hi = end - index * size if index == last else len(plain)
            pieces.append(plain if (lo, hi) == (0, len(plain)) else plain[lo:hi])
            if len(pieces) == _READ_BATCH or index == last:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces = []


class BlobFile(io.RawIOBase):
    """A read-only, seekable plaintext view of a blob (for zipfile and other seeking readers)."""

    def __init__(self, blob: _OpenBlob) -> None:
        super().__init__()
        self._blob = blob
        self._position = 0
        self._cached_index = -1
        self._cached = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._blob.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._position = position
        return position

    def readinto(self, buffer: WriteableBuffer) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target) and self._position < self._blob.size:
            index = self._position // self._blob.chunk_size
            if index != self._cached_index:
                self._cached = self._blob.chunk(index)
                self._cached_index = index
            lo = self._position - index * self._blob.chunk_size
            n = min(len(target) - done, len(self._cached) - lo)
            target[done : done + n] = self._cached[lo : lo + n]
            done += n
            self._position += n
        return done

    def close(self) -> None:
        if not self.closed:
            self._blob.close()
        super().close()


class BlobWriter:
    """Streams plaintext into an encrypted temporary file; ``commit`` names it by its SHA-256.

    Synchronous and thread-safe (one lock), so the async writer can hand batches to a thread
    while the event loop may abort it. Memory is bounded by one chunk plus the data passed to
    one ``write``. Use as a context manager: leaving it without ``commit`` deletes the file.
    """

    def __init__(self, store: BlobStore, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._store = store
        self._max_size = max_size
        self._chunk_size = store.chunk_size
        self._lock = threading.Lock()
        self._state = "open"
        self._size = 0
        self._index = 0
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._written_back = 0
        data_key = secrets.token_bytes(32)
        chunk_key, self._mac_key = _derive(data_key)
        self._aead = AESGCM(chunk_key)
        self._file_id = secrets.token_bytes(16)
        fixed = _FIXED.pack(MAGIC, VERSION, 0, self._chunk_size, self._file_id)
        self._fixed = fixed
        self._digest = hashlib.sha256(fixed).digest()
        key_id = store.current_key_id
        slot = _SLOT.pack(key_id.encode("ascii"), aes_key_wrap(store.master_keys[key_id], data_key))
        header = fixed + bytes(MAC_END - FIXED_END) + slot + _EMPTY_SLOT
        self.tmp_path = store.tmp_dir / f"{secrets.token_hex(16)}{_TMP_SUFFIX}"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(self._fd, [header])
        except BaseException:
            self.abort()
            raise

    @property
    def size(self) -> int:
        return self._size

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def _seal(self, plain: bytes | bytearray | memoryview, final: bool) -> list[bytes]:
        nonce = secrets.token_bytes(NONCE_SIZE)
        aad = self._file_id + struct.pack(">QB", self._index, final) + self._digest
        self._index += 1
        return [nonce, self._aead.encrypt(nonce, plain, aad)]

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"blob writer is {self._state}")

    def write(self, data: ReadableBuffer) -> None:
        """Hash and encrypt ``data``; every full chunk goes to disk once more data follows."""
        with self._lock:
            self._check_open()
            view = memoryview(data).cast("B")
            if self._size + len(view) > self._max_size:
                self._abort_locked()
                raise DomainError(
                    _l("The file is larger than {size} MB.", size=self._max_size // MiB),
                    field="file",
                )
            self._size += len(view)
            self._hash.update(view)
            size, pending = self._chunk_size, self._pending
            out: list[bytes] = []
            try:
                if pending:
                    take = min(size - len(pending), len(view))
                    pending += view[:take]
                    view = view[take:]
                    if not view:
                        return  # a full chunk waits: only more data proves it is not the last
                    out += self._seal(pending, final=False)
                    pending.clear()
                while len(view) > size:
                    out += self._seal(view[:size], final=False)
                    view = view[size:]
                    if len(out) >= _WRITEV_BATCH:
                        _write_all(self._fd, out)
                        out = []
                pending += view
                if out:
                    _write_all(self._fd, out)
                    self._start_writeback()
            except BaseException:
                self._abort_locked()
                raise

    def _start_writeback(self) -> None:
        """Let the kernel write finished megabytes now, so the fsync at commit waits less."""
        position = os.lseek(self._fd, 0, os.SEEK_CUR)
        if _FADVISE is not None and position - self._written_back >= _WRITEBACK_STEP:
            # On Linux, DONTNEED starts asynchronous writeback of dirty pages in the range.
            os.posix_fadvise(self._fd, self._written_back, position - self._written_back, _FADVISE)
            self._written_back = position

    def commit(self) -> Blob:
        """Seal the last chunk and the header, then link the file under its hash (or dedup)."""
        with self._lock:
            self._check_open()
            if self._size == 0:
                self._abort_locked()
                raise DomainError(_l("The file is empty."), field="file")
            try:
                _write_all(self._fd, self._seal(self._pending, final=True))
                self._pending = bytearray()
                digest = self._hash.digest()
                sealed = self._fixed + _SEALED.pack(self._size, digest)
                os.pwrite(self._fd, sealed[FIXED_END:] + _header_mac(self._mac_key, sealed), 32)
                sha = digest.hex()
                target = self._store.path(sha)
                if target.exists():  # stored already: keep that one
                    self._abort_locked()
                    self._state = "committed"
                    return Blob(sha, self._size, created=False)
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
                created = self._store._install(self.tmp_path, target)
            except BaseException:
                self._abort_locked()
                raise
            self._state = "committed"
            return Blob(sha, self._size, created=created)

    def abort(self) -> None:
        """Discard everything written (idempotent; a no-op after ``commit``)."""
        with self._lock:
            if self._state == "open":
                self._abort_locked()

    def _abort_locked(self) -> None:
        self._state = "aborted"
        self._pending = bytearray()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp_path.unlink(missing_ok=True)


class AsyncBlobWriter:
    """The writer for async code: ``async with store.writer() as w: await w.write(...)``.

    Data is gathered into batches of ``batch_size`` bytes, each hashed, encrypted and written
    in a worker thread, so the event loop never waits for the disk or the cipher. Leaving the
    block without ``commit`` (an error, a client that went away, a cancelled task, the size
    limit) deletes the temporary file; the abort waits for a batch still in its thread.
    """

    def __init__(self, store: BlobStore, max_size: int, batch_size: int = MiB) -> None:
        self._store = store
        self._max_size = max_size
        self._batch_size = batch_size
        self._buffer = bytearray()
        self._size = 0
        self._writer: BlobWriter | None = None

    async def __aenter__(self) -> Self:
        self._writer = BlobWriter(self._store, self._max_size)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._buffer = bytearray()
        if self._writer is not None:
            self._writer.abort()

    def _sync(self) -> BlobWriter:
        if self._writer is None:
            raise RuntimeError("use the writer in an `async with` block")
        return self._writer

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        writer = self._sync()
        if self._size + len(data) > self._max_size:
            writer.abort()
            raise DomainError(
                _l("The file is larger than {size} MB.", size=self._max_size // MiB),
                field="file",
            )
        self._size += len(data)
        self._buffer += data
        if len(self._buffer) >= self._batch_size:
            batch, self._buffer = self._buffer, bytearray()
            await asyncio.to_thread(writer.write, batch)

    async def commit(self) -> Blob:
        writer = self._sync()
        if self._buffer:
            batch, self._buffer = self._buffer, bytearray()
            await asyncio.to_thread(writer.write, batch)
        return await asyncio.to_thread(writer.commit)


class BlobStore:
    """Encrypted, content-addressed files under ``root`` (see the module docstring).

    ``master_keys`` maps key ids (≤ 32 ASCII characters) to 32-byte AES key-wrapping keys; new
    blobs are wrapped under ``current_key_id``; blobs wrapped under any other configured key
    stay readable until ``rotate`` re-wraps them. Methods are synchronous (file I/O): call
    them from a thread in async code, except ``writer()``, which does that itself.
    """

    def __init__(
        self,
        root: Path,
        master_keys: dict[str, bytes],
        current_key_id: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        for key_id, key in master_keys.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise ValueError(f"master key id {key_id!r}: 1-32 of A-Z a-z 0-9 . _ : -")
            if len(key) != 32:
                raise ValueError(f"master key {key_id!r} must be 32 bytes")
        if current_key_id not in master_keys:
            raise ValueError(f"current master key {current_key_id!r} is not configured")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
        self.root = Path(root)
        self.master_keys = dict(master_keys)
        self.current_key_id = current_key_id
        self.chunk_size = chunk_size
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # -- naming ---------------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        if not _SHA_RE.fullmatch(sha256):
            raise ValueError("not a lower-case hex SHA-256")
        return self.blob_dir / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def iter_blobs(self) -> Iterator[str]:
        """The SHA-256 of every stored blob (unordered)."""
        for first in os.scandir(self.blob_dir):
            if not first.is_dir(follow_symlinks=False):
                continue
            for second in os.scandir(first.path):
                if not second.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(second.path):
                    name = entry.name
                    if (
                        _SHA_RE.fullmatch(name)
                        and name[:2] == first.name
                        and name[2:4] == second.name
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield name

    def __iter__(self) -> Iterator[str]:
        return self.iter_blobs()

    # -- writing --------------------------------------------------------------------------

    def writer(self, max_size: int = DEFAULT_MAX_SIZE) -> AsyncBlobWriter:
        """For async code: ``async with store.writer() as w: ...; blob = await w.commit()``."""
        return AsyncBlobWriter(self, max_size)

    def open_writer(self, max_size: int = DEFAULT_MAX_SIZE) -> BlobWriter:
        """For sync code or a worker thread: ``with store.open_writer() as w: ...``."""
        return BlobWriter(self, max_size)

    def put_stream(self, source: BinaryIO, max_size: int = DEFAULT_MAX_SIZE) -> Blob:
        """Store everything ``source`` yields (sync; e.g. a member of a ZIP archive)."""
        with self.open_writer(max_size) as writer:
            while data := source.read(self.chunk_size * _READ_BATCH):
                writer.write(data)
            return writer.commit()

    def put_bytes(self, data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Blob:
        with self.open_writer(max_size) as writer:
            writer.write(data)
            return writer.commit()

    def _install(self, tmp: Path, target: Path) -> bool:
        """Link ``tmp`` at ``target`` durably; False if an identical blob won the race."""
        self._make_dirs(target.parent)
        try:
            os.link(tmp, target)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            return False
        except OSError as exc:  # a file system without hard links
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if target.exists():
                tmp.unlink(missing_ok=True)
                return False
            os.replace(tmp, target)
        else:
            tmp.unlink()
        _fsync_dir(target.parent)
        return True

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
            _fsync_dir(path.parent)

    def cleanup_tmp(self, older_than: float = 3600.0) -> int:
        """Delete temporary files left by a crashed process; returns how many."""
        limit = time.time() - older_than
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.name.endswith(_TMP_SUFFIX) and entry.stat().st_mtime < limit:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    # -- reading --------------------------------------------------------------------------

    def _unlock(self, raw: bytes, header: _Header, name: str) -> tuple[bytes, int]:
        """(data key, slot index) from the first slot that unwraps and passes the MAC."""
        order = sorted((0, 1), key=lambda s: header.slots[s][0] != self.current_key_id)
        tried: list[str] = []
        for slot in order:
            key_id, wrapped = header.slots[slot]
            master = self.master_keys.get(key_id)
            if master is None:
                continue
            tried.append(key_id)
            try:
                data_key = aes_key_unwrap(master, wrapped)
            except InvalidUnwrap:
                continue
            _, mac_key = _derive(data_key)
            if hmac.compare_digest(_header_mac(mac_key, raw), header.mac):
                return data_key, slot
        if tried:
            raise BlobCorrupted(f"blob {name}: header failed authentication")
        ids = [key_id for key_id, _ in header.slots if key_id]
        raise MasterKeyMissing(f"blob {name}: wrapped under master key(s) {ids}, none configured")

    def _open(self, sha256: str) -> _OpenBlob:
        path = self.path(sha256)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        try:
            raw = os.pread(fd, HEADER_SIZE, 0)
            header = _parse_header(raw, sha256)
            data_key, _ = self._unlock(raw, header, sha256)
            if header.sha256.hex() != sha256:
                raise BlobCorrupted(f"blob {sha256}: holds another file ({header.sha256.hex()})")
            length = os.fstat(fd).st_size
            if length != header.file_length:
                raise BlobCorrupted(
                    f"blob {sha256}: {length} bytes on disk, {header.file_length} expected"
                )
            chunk_key, _ = _derive(data_key)
            return _OpenBlob(fd, sha256, header, chunk_key)
        except BaseException:
            os.close(fd)
            raise

    def size(self, sha256: str) -> int:
        """The plaintext size (from the authenticated header)."""
        blob = self._open(sha256)
        blob.close()
        return blob.size

    def open_range(
        self, sha256: str, start: int = 0, end: int | None = None
    ) -> Generator[bytes, None, None]:
        """Plaintext bytes ``[start, end)`` (``end`` exclusive, default the size).

        The header is checked now (so a missing or damaged blob raises before a response
        starts); the chunks covering the range are decrypted as the generator is consumed.
        ``close()`` the generator if you stop early (a ``for`` loop to the end closes it).
        """
        blob = self._open(sha256)
        end = blob.size if end is None else end
        if not 0 <= start <= end <= blob.size:
            blob.close()
            raise ValueError(f"range [{start}, {end}) outside 0..{blob.size}")
        return self._stream(blob, start, end)

    @staticmethod
    def _stream(blob: _OpenBlob, start: int, end: int) -> Generator[bytes, None, None]:
        try:
            yield from blob.batches(start, end)
        finally:
            blob.close()

    def read_all(self, sha256: str) -> bytes:
        return b"".join(self.open_range(sha256))

    def open(self, sha256: str) -> io.BufferedReader:
        """A seekable, read-only plaintext file object (decrypts the chunks it reads)."""
        return io.BufferedReader(BlobFile(self._open(sha256)), buffer_size=self.chunk_size)

    def verify(self, sha256: str) -> bool:
        """Decrypt every chunk and check the plaintext's SHA-256 against the name.

        False when the blob is missing or fails any check; raises ``MasterKeyMissing`` when its
        key is not configured (that is a configuration problem, not damage).
        """
        try:
            blob = self._open(sha256)
        except (BlobNotFound, BlobCorrupted):
            return False
        digest = hashlib.sha256()
        try:
            for piece in blob.chunks(0, blob.count - 1):  # every chunk, even an empty one
                digest.update(piece)
        except BlobCorrupted:
            return False
        finally:
            blob.close()
        return digest.hexdigest() == sha256

    def delete(self, sha256: str) -> bool:
        """Remove a blob (callers make sure nothing refers to it); False if it was absent."""
        path = self.path(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    # -- keys -----------------------------------------------------------------------------

    def rotate(self, new_key_id: str | None = None) -> int:
        """Re-wrap every blob's data key under ``new_key_id`` (default: the current key).

        Returns how many blobs changed. Idempotent and resumable: blobs already wrapped only
        under the new key are skipped, and one interrupted half-way is finished. Continues past
        blobs it cannot re-wrap and then raises ``RotationIncomplete`` naming them.
        """
        key_id = new_key_id or self.current_key_id
        if key_id not in self.master_keys:
            raise ValueError(f"master key {key_id!r} is not configured")
        changed = 0
        failed: dict[str, str] = {}
        for sha in self.iter_blobs():
            try:
                changed += self._rewrap(sha, key_id)
            except (BlobError, OSError) as exc:
                failed[sha] = f"{type(exc).__name__}: {exc}"
        if failed:
            raise RotationIncomplete(changed, failed)
        return changed

    def _rewrap(self, sha256: str, key_id: str) -> bool:
        fd = os.open(self.path(sha256), os.O_RDWR)
        try:
            raw = os.pread(fd, HEADER_SIZE, 0)
            header = _parse_header(raw, sha256)
            data_key, slot = self._unlock(raw, header, sha256)
            other = 1 - slot
            if header.slots[slot][0] == key_id:
                if header.slots[other][0] or header.slots[other][1] != bytes(40):
                    os.pwrite(fd, _EMPTY_SLOT, SLOT_OFFSETS[other])  # finish a rotation
                    os.fsync(fd)
                    return True
                return False
            new_slot = _SLOT.pack(
                key_id.encode("ascii"), aes_key_wrap(self.master_keys[key_id], data_key)
            )
            os.pwrite(fd, new_slot, SLOT_OFFSETS[other])
            os.fsync(fd)  # the new wrapping is durable before the old one goes
            os.pwrite(fd, _EMPTY_SLOT, SLOT_OFFSETS[slot])
            os.fsync(fd)
            return True
        finally:
            os.close(fd)
