"""Moving files stored by the first, whole-file storage into the blob store.

Before the evidence log, case materials were stored whole, AES-256-GCM encrypted under a key
derived from DATA_KEY, at ``STORAGE_DIR/ab/<sha256>``. :func:`migrate_legacy_files` decrypts
each, stores it in the chunked blob store (portal.evidence.blobs) under the same SHA-256, checks
it, and deletes the old file. It is idempotent and runs with ``jiefen db upgrade``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portal.crypto import derive_key
from portal.evidence.blobs import BlobStore

_NAME = re.compile(r"[0-9a-f]{64}")


def legacy_files(storage_dir: Path) -> list[Path]:
    return [
        path
        for folder in sorted(storage_dir.glob("[0-9a-f][0-9a-f]"))
        if folder.is_dir()
        for path in sorted(folder.iterdir())
        if _NAME.fullmatch(path.name) and path.name.startswith(folder.name)
    ]


def migrate_legacy_files(storage_dir: Path, data_key: str, store: BlobStore) -> int:
    """Move every legacy file into ``store``; returns how many. A file that does not decrypt
    or whose content has another hash is left in place and reported by ValueError."""
    aead = AESGCM(derive_key(data_key, "jiefen/blobs/aes-gcm"))
    moved = 0
    for path in legacy_files(storage_dir):
        sha = path.name
        raw = path.read_bytes()
        try:
            data = aead.decrypt(raw[:12], raw[12:], sha.encode())
        except Exception as exc:
            raise ValueError(f"legacy file {path} does not decrypt: {exc!r}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError(f"legacy file {path} does not have the SHA-256 it is named by")
        blob = store.put_bytes(data, max_size=max(len(data), 1))
        assert blob.sha256 == sha
        path.unlink()
        moved += 1
    for folder in storage_dir.glob("[0-9a-f][0-9a-f]"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return moved
