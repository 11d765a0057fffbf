"""Encrypted, content-addressed storage for uploaded files.

A first, whole-file version for case materials (up to ``MAX_MATERIAL_BYTES``): the upload is read
in chunks while its SHA-256 is computed and its type is checked by magic bytes, then stored
AES-256-GCM encrypted under STORAGE_DIR/ab/<sha256>, bound to its hash. The evidence issue
replaces this with chunked encryption (constant memory, range reads) behind the same calls.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.datastructures import UploadFile

from portal.crypto import derive_key
from portal.errors import DomainError
from portal.i18n import _l

MAX_MATERIAL_BYTES = 20 * 1024 * 1024
CHUNK = 64 * 1024

# (content type, extensions, test on the first bytes)
KINDS: list[tuple[str, tuple[str, ...], bytes, int]] = [
    ("application/pdf", (".pdf",), b"%PDF-", 0),
    ("image/jpeg", (".jpg", ".jpeg"), b"\xff\xd8\xff", 0),
    ("image/png", (".png",), b"\x89PNG\r\n\x1a\n", 0),
    ("image/heic", (".heic", ".heif"), b"ftyp", 4),
]


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    content_type: str
    filename: str


def clean_filename(name: str) -> str:
    """A safe display name: no path, no control characters, at most 120 characters."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").split("/")[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    name = re.sub(r"\s+", " ", name)
    return name[-120:] or "file"


def sniff(head: bytes, filename: str) -> str:
    extension = Path(filename).suffix.lower()
    for content_type, extensions, magic, offset in KINDS:
        if head[offset : offset + len(magic)] == magic:
            if extension not in extensions:
                raise DomainError(
                    _l(
                        "The file's name does not match its content. Upload a PDF, JPG, PNG or HEIC file."  # noqa: E501
                    ),
                    field="file",
                )
            return content_type
    raise DomainError(_l("Upload a PDF, JPG, PNG or HEIC file."), field="file")


class BlobStore:
    def __init__(self, root: Path, data_key: str) -> None:
        self.root = root
        self._aead = AESGCM(derive_key(data_key, "jiefen/blobs/aes-gcm"))

    def path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a SHA-256")
        return self.root / sha256[:2] / sha256

    async def save_upload(
        self, upload: UploadFile, max_bytes: int = MAX_MATERIAL_BYTES
    ) -> StoredFile:
        filename = clean_filename(upload.filename or "")
        digest = hashlib.sha256()
        parts: list[bytes] = []
        size = 0
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise DomainError(
                    _l("The file is larger than {size} MB.", size=max_bytes // (1024 * 1024)),
                    field="file",
                )
            digest.update(chunk)
            parts.append(chunk)
        if size == 0:
            raise DomainError(_l("The file is empty."), field="file")
        return self.put(b"".join(parts), filename, sha256=digest.hexdigest())

    def put(self, data: bytes, filename: str, *, sha256: str | None = None) -> StoredFile:
        """Check the type, then store ``data`` encrypted under its SHA-256 (once)."""
        filename = clean_filename(filename)
        if not data:
            raise DomainError(_l("The file is empty."), field="file")
        content_type = sniff(data[:16], filename)
        sha = sha256 or hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            nonce = os.urandom(12)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(nonce + self._aead.encrypt(nonce, data, sha.encode()))
            os.replace(tmp, target)
        return StoredFile(sha256=sha, size=len(data), content_type=content_type, filename=filename)

    def read(self, sha256: str) -> bytes:
        blob = self.path(sha256).read_bytes()
        return self._aead.decrypt(blob[:12], blob[12:], sha256.encode())
