"""Keys derived from settings; personal data encrypted at rest; blind indexes; signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"


def derive_key(master: str, purpose: str, length: int = 32) -> bytes:
    """A sub-key for one purpose (HKDF-SHA256), so no two uses share a key."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(
        master.encode()
    )


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_digest(token: str) -> str:
    """What the database keeps of a bearer token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class DataVault:
    """Encrypts personal data at rest (AES-256-GCM) and computes blind indexes for look-ups.

    Each ciphertext is bound to its column through the associated data, so a value copied into
    another column does not decrypt. Blind indexes are keyed HMACs of the normalised value:
    equality look-ups work, the value itself is never stored in clear.
    """

    def __init__(self, data_key: str) -> None:
        self._aead = AESGCM(derive_key(data_key, "jiefen/personal-data/aes-gcm"))
        self._index_key = derive_key(data_key, "jiefen/personal-data/blind-index")

    def encrypt(self, value: str, context: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, value.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        if blob[:1] != _VERSION:
            raise ValueError("unknown ciphertext version")
        nonce, body = blob[1:13], blob[13:]
        return self._aead.decrypt(nonce, body, context.encode()).decode()

    def blind_index(self, kind: str, value: str) -> str:
        mac = hmac.new(self._index_key, f"{kind}\x00{value}".encode(), hashlib.sha256)
        return base64.b32encode(mac.digest()).decode().rstrip("=").lower()
