"""Receive a multipart/form-data upload as a stream, straight into the encrypted blob store.

``receive`` feeds the request body, as it arrives, to python-multipart's streaming parser and
never holds a whole file (nor the whole body) in memory: each file part's first ``HEAD_SIZE``
bytes are kept to ``sniff`` its type against its name, and only then is a blob writer opened and
the part streamed into it (the store hashes and encrypts as it writes). Text fields are collected
as UTF-8 strings. Once the body has ended, each stored file gets its whole-file check
(``check_container``: damaged Office files, ZIP bombs) by reading the stored blob back.

All or nothing: whatever goes wrong (a refused file, a limit, a malformed or cut-off body, an
exception from the stream, a cancelled task) aborts the blob being written and deletes every
blob this upload created, so the store holds nothing half-uploaded. Blobs that were stored
already before the upload (deduplicated, ``Blob.created`` False) are never deleted. Once the
upload is accepted, ``Received.discard`` undoes it if the caller's transaction fails.

Decisions: a file input left empty (a part with ``filename=""`` and no content, as browsers send
it) is skipped; a file with content but no usable name is refused (``clean_filename``). The body
is read only up to its final boundary (an epilogue is ignored). Only the ``binary``/``7bit``/
``8bit`` transfer encodings are accepted (RFC 7578 deprecates the others; browsers never send
them). A part's own Content-Type is ignored: the content decides.
"""

from __future__ import annotations

import asyncio
import threading
import zipfile
import zlib
from collections.abc import AsyncIterator, Generator, Iterable
from dataclasses import dataclass, field
from typing import Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from portal.errors import DomainError
from portal.evidence.blobs import AsyncBlobWriter, Blob, BlobStore, MiB
from portal.evidence.filetypes import (
    HEAD_SIZE,
    Kind,
    ZipMember,
    check_container,
    clean_filename,
    iter_zip_members,
    sniff,
)
from portal.i18n import _l

_FEED = 64 * 1024  # the parser is fed at most this much at a time (bounds the events per write)
_MEMBER_READ = 256 * 1024
_ENCODINGS = (b"binary", b"7bit", b"8bit")


@dataclass(frozen=True)
class ReceivedFile:
    field: str  # the form field's name
    filename: str  # cleaned (clean_filename)
    kind: Kind
    blob: Blob
    archive_path: str | None = None  # where it was in the ZIP file it was unpacked from


@dataclass
class Received:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[ReceivedFile] = field(default_factory=list)

    def first(self, name: str, default: str = "") -> str:
        """The first value of the text field ``name``."""
        values = self.fields.get(name)
        return values[0] if values else default

    async def discard(self, store: BlobStore) -> None:
        """Delete the blobs this upload created (e.g. when the caller's transaction failed)."""
        await discard_files(store, self.files)


class UploadIncomplete(DomainError):
    """The body ended before its final boundary: the client went away or was cut off."""

    def __init__(self) -> None:
        super().__init__(
            _l("The upload was cut off before it was complete. Please try again."), field="file"
        )


async def discard_files(store: BlobStore, files: Iterable[ReceivedFile]) -> None:
    """Delete the blobs of ``files`` that their upload created (never deduplicated ones)."""
    shas = {f.blob.sha256 for f in files if f.blob.created}
    if shas:
        await asyncio.to_thread(_delete_all, store, shas)


def _delete_all(store: BlobStore, shas: Iterable[str]) -> None:
    for sha in shas:
        store.delete(sha)


# -- errors ----------------------------------------------------------------------------------


def _malformed() -> DomainError:
    return DomainError(_l("The upload could not be read. Please try again."), field="file")


def _too_large(max_bytes: int) -> DomainError:
    return DomainError(
        _l("The file is larger than {size} MB.", size=max_bytes // MiB), field="file"
    )


def _no_name() -> DomainError:
    return DomainError(_l("The file has no name."), field="file")


# -- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PartStart:
    name: str
    filename: str | None  # None for a text field; "" for a file input left empty


class _Marker:
    pass


_PART_END: Final = _Marker()
_BODY_END: Final = _Marker()
_Event = _PartStart | bytes | _Marker


def _boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary:
        raise _malformed()
    return boundary


def _utf8(raw: bytes) -> str:
    # parse_options_header hands back the header's raw bytes; browsers send names in UTF-8
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed() from None


def _part_start(headers: dict[bytes, bytes]) -> _PartStart:
    disposition, options = parse_options_header(headers.get(b"content-disposition"))
    name = options.get(b"name")
    if disposition != b"form-data" or name is None:
        raise _malformed()
    if headers.get(b"content-transfer-encoding", b"binary").lower() not in _ENCODINGS:
        raise _malformed()
    filename = options.get(b"filename")
    return _PartStart(_utf8(name), None if filename is None else _utf8(filename))


class _Events:
    """The parser's callbacks: turn what one ``write`` finds into a list of events."""

    def __init__(self) -> None:
        self.events: list[_Event] = []
        self._headers: dict[bytes, bytes] = {}
        self._name = bytearray()
        self._value = bytearray()

    def take(self) -> list[_Event]:
        events, self.events = self.events, []
        return events

    def part_begin(self) -> None:
        self._headers = {}

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[bytes(self._name).lower()] = bytes(self._value).strip(b" \t")
        self._name.clear()
        self._value.clear()

    def headers_finished(self) -> None:
        self.events.append(_part_start(self._headers))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self.events.append(data[start:end])

    def part_end(self) -> None:
        self.events.append(_PART_END)

    def end(self) -> None:
        self.events.append(_BODY_END)

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self.part_begin,
                "on_header_field": self.header_field,
                "on_header_value": self.header_value,
                "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished,
                "on_part_data": self.part_data,
                "on_part_end": self.part_end,
                "on_end": self.end,
            },
        )


# -- receiving -------------------------------------------------------------------------------


class _Upload:
    """What the events mean: fields collected, files sniffed and streamed into blobs."""

    def __init__(
        self,
        store: BlobStore,
        max_file_bytes: int,
        max_files: int,
        max_field_bytes: int,
        max_fields: int,
    ) -> None:
        self.store = store
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.max_field_bytes = max_field_bytes
        self.max_fields = max_fields
        self.received = Received()
        self.done = False
        self._part: _PartStart | None = None
        self._filename = ""  # the current file's cleaned name
        self._buffer = bytearray()  # a text field's value, or a file's head until sniffed
        self._size = 0
        self._kind: Kind | None = None
        self._writer: AsyncBlobWriter | None = None
        self._file_count = 0
        self._field_count = 0

    async def handle(self, events: list[_Event]) -> None:
        for event in events:
            if isinstance(event, _PartStart):
                self._begin(event)
            elif isinstance(event, bytes):
                await self._data(event)
            elif event is _PART_END:
                await self._end_part()
            else:
                self.done = True
                return

    def _begin(self, part: _PartStart) -> None:
        self._part = part
        self._buffer = bytearray()
        self._size = 0
        self._kind = None
        if part.filename is None:
            self._field_count += 1
            if self._field_count > self.max_fields:
                raise DomainError(
                    _l("The form has more than {count} fields.", count=self.max_fields),
                    field="file",
                )
            return
        self._file_count += 1
        if self._file_count > self.max_files:
            raise DomainError(
                _l("At most {count} files can be uploaded at once.", count=self.max_files),
                field="file",
            )
        self._filename = clean_filename(part.filename) if part.filename else ""

    async def _data(self, data: bytes) -> None:
        part = self._part
        assert part is not None
        self._size += len(data)
        if part.filename is None:
            if self._size > self.max_field_bytes:
                raise DomainError(_l("The text in this field is too long."), field=part.name)
            self._buffer += data
            return
        if not self._filename:
            raise _no_name()
        if self._size > self.max_file_bytes:
            raise _too_large(self.max_file_bytes)  # before the writer sees a byte too many
        if self._writer is not None:
            await self._writer.write(data)
            return
        self._buffer += data
        if len(self._buffer) >= HEAD_SIZE:
            await self._open_writer()

    async def _open_writer(self) -> None:
        """Sniff the head (refusing the file before anything is stored), then start the blob."""
        self._kind = sniff(bytes(self._buffer[:HEAD_SIZE]), self._filename)
        writer = self.store.writer(self.max_file_bytes)
        await writer.__aenter__()
        self._writer = writer
        head, self._buffer = bytes(self._buffer), bytearray()
        await writer.write(head)

    async def _end_part(self) -> None:
        part, self._part = self._part, None
        assert part is not None
        if part.filename is None:
            try:
                text = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise DomainError(
                    _l("The form contains text that is not valid UTF-8."), field=part.name
                ) from None
            self.received.fields.setdefault(part.name, []).append(text)
            self._buffer = bytearray()
            return
        if not part.filename and self._size == 0:
            return  # a file input left empty
        if self._writer is None:
            await self._open_writer()  # a file smaller than HEAD_SIZE (or empty: refused)
        writer, kind = self._writer, self._kind
        assert writer is not None and kind is not None
        blob = await writer.commit()
        self.received.files.append(ReceivedFile(part.name, self._filename, kind, blob))
        self._writer = None
        await writer.__aexit__(None, None, None)

    async def check_containers(self) -> None:
        for received in self.received.files:
            await asyncio.to_thread(_check_stored, self.store, received)

    async def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.__aexit__(None, None, None)  # deletes its temporary file
        await self.received.discard(self.store)


def _check_stored(store: BlobStore, received: ReceivedFile) -> None:
    with store.open(received.blob.sha256) as source:
        check_container(source, received.kind)


async def receive(
    stream: AsyncIterator[bytes],
    content_type: str,
    store: BlobStore,
    *,
    max_file_bytes: int,
    max_files: int = 50,
    max_field_bytes: int = 64 * 1024,
    max_fields: int = 50,
) -> Received:
    """Parse a multipart/form-data body from ``stream`` (e.g. ``request.stream()``).

    Raises DomainError (``field="file"``, or the field's name for a text field's own problem)
    when anything is refused, ``UploadIncomplete`` (a DomainError) when the body stops before
    its final boundary; any exception from ``stream`` propagates. In every case, nothing this
    call stored is left behind.
    """
    upload = _Upload(store, max_file_bytes, max_files, max_field_bytes, max_fields)
    try:
        events = _Events()
        try:
            parser = events.parser(_boundary(content_type))
        except FormParserError:
            raise _malformed() from None
        async for chunk in stream:
            for start in range(0, len(chunk), _FEED):
                try:
                    parser.write(chunk[start : start + _FEED])
                except FormParserError:
                    raise _malformed() from None
                await upload.handle(events.take())
                if upload.done:
                    break
            if upload.done:
                break
        if not upload.done:
            raise UploadIncomplete()
        await upload.check_containers()
    except BaseException:
        await upload.abort()
        raise
    return upload.received


# -- ZIP archives ----------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


def _member_refused(path: str) -> DomainError:
    return DomainError(
        _l("The ZIP file contains a file that cannot be accepted: {name}.", name=path[:120]),
        field="file",
    )


async def expand_zip(
    store: BlobStore, archive: ReceivedFile, *, max_file_bytes: int
) -> list[ReceivedFile]:
    """Store each file of an uploaded ZIP as a blob of its own (the archive's blob stays).

    ``iter_zip_members`` checks the archive first (``check_zip``: bombs, damage, encryption,
    unsafe names) and unpacks a nested ZIP's files in its place. Every member is sniffed
    before it is stored and gets its container check; if any member is refused, the
    DomainError names it (its reason is the error's ``__cause__``) and every blob this call
    created is deleted. Runs in a worker thread; a cancelled call stops at its next read and
    cleans up there.
    """
    if archive.kind.name != "zip":
        raise ValueError(f"{archive.filename} is not a ZIP upload ({archive.kind.name})")
    cancelled = threading.Event()
    try:
        return await asyncio.to_thread(_expand, store, archive, max_file_bytes, cancelled)
    except asyncio.CancelledError:
        cancelled.set()
        raise


def _expand(
    store: BlobStore, archive: ReceivedFile, max_file_bytes: int, cancelled: threading.Event
) -> list[ReceivedFile]:
    files: list[ReceivedFile] = []
    try:
        with store.open(archive.blob.sha256) as source:
            members = iter_zip_members(source)
            try:
                for member in members:
                    files.append(
                        _store_member(store, member, archive.field, max_file_bytes, cancelled)
                    )
            finally:
                if isinstance(members, Generator):
                    members.close()  # closes the archive before its source
    except BaseException:
        _delete_all(store, {f.blob.sha256 for f in files if f.blob.created})
        raise
    return files


def _store_member(
    store: BlobStore,
    member: ZipMember,
    field_name: str,
    max_file_bytes: int,
    cancelled: threading.Event,
) -> ReceivedFile:
    try:
        head = member.stream.read(HEAD_SIZE)
        kind = sniff(head, member.filename)
        with store.open_writer(max_file_bytes) as writer:
            writer.write(head)
            while data := member.stream.read(_MEMBER_READ):
                if cancelled.is_set():
                    raise _Cancelled
                writer.write(data)
            blob = writer.commit()
    except (DomainError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _member_refused(member.path) from exc
    received = ReceivedFile(field_name, member.filename, kind, blob, archive_path=member.path)
    try:
        _check_stored(store, received)
    except DomainError as exc:
        if blob.created:
            store.delete(blob.sha256)
        raise _member_refused(member.path) from exc
    return received
