"""C2SP signed notes and transparency-log checkpoints, with Ed25519 keys.

Needs only the standard library and ``cryptography``. Implements
https://c2sp.org/signed-note (the format of Go's ``golang.org/x/mod/sumdb/note``) and
https://c2sp.org/tlog-checkpoint. A signed checkpoint looks like this::

    jiefen.example/evidence-log
    1234
    XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=

    — jiefen.example/evidence-log S8xS9L8U…base64 of key ID and Ed25519 signature…

- The note *text* is UTF-8 without ASCII control characters other than newline (so no CR),
  ends with a newline and is followed by a blank line and one or more signature lines:
  em dash (U+2014), space, key name, space, base64 of the 4-byte big-endian key ID followed by
  the 64-byte Ed25519 signature of the text.
- Key names are non-empty, without Unicode spaces or ``+``. The key ID is the first four bytes
  of SHA-256(key name || 0x0A || 0x01 || 32-byte public key); 0x01 is the Ed25519 type.
- A verifier key ("vkey"), the form in which the committee publishes the log's public key, is
  ``<name>+<8 hex digits of key ID>+<base64(0x01 || public key)>``.
- A checkpoint's text is the log's origin, the tree size in decimal (no leading zeros) and the
  base64 root hash, one per line, then optional non-empty extension lines.

:func:`open_note` ignores signatures from keys it was not given (as the spec requires), refuses
the whole note if a signature from a known key fails, and refuses a note that no known key
signed. Every refusal is a :class:`NoteError` with a message that says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ED25519",
    "Checkpoint",
    "CheckpointError",
    "InvalidSignatureError",
    "MalformedKeyError",
    "MalformedNoteError",
    "NoteError",
    "NoteSignature",
    "UnverifiedNoteError",
    "Verifier",
    "format_checkpoint",
    "is_valid_key_name",
    "key_id",
    "make_vkey",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_note",
    "parse_vkey",
    "sign_note",
]

#: Signature type byte of Ed25519 in signed notes.
ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "
#: At most this many signatures per note (the spec asks verifiers to accept at least 16).
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
MAX_TREE_SIZE = 1 << 63
HASH_SIZE = 32

_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)
_KEY_ID_RE = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)


class NoteError(ValueError):
    """A note, key or checkpoint that must not be trusted; the message says why."""


class MalformedNoteError(NoteError):
    """Text that is not a well-formed signed note."""


class MalformedKeyError(NoteError):
    """A verifier key that is not well formed, or whose key ID does not match the key."""


class InvalidSignatureError(NoteError):
    """A signature from a known key that does not verify: the note was altered."""


class UnverifiedNoteError(NoteError):
    """No signature from any of the given keys."""


class CheckpointError(NoteError):
    """Note text that is not a well-formed checkpoint."""


# ---------------------------------------------------------------------------------------------
# Keys


def _b64decode(text: str, what: str, error: type[NoteError]) -> bytes:
    """Strict standard base64: valid alphabet, padding, and the canonical encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise error(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise error(f"{what} is not canonical base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def is_valid_key_name(name: object) -> bool:
    """Non-empty, no Unicode spaces, no ``+``, no control characters."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(ch.isspace() or ch < " " or ch == "\x7f" for ch in name)
    )


def _public_bytes(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes_raw()
    if isinstance(public_key, bytes) and len(public_key) == 32:
        return public_key
    raise MalformedKeyError("an Ed25519 public key is 32 bytes")


def _key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()


def key_id(name: str, public_key: Ed25519PublicKey | bytes) -> int:
    """The 32-bit key ID of an Ed25519 key with this name."""
    if not is_valid_key_name(name):
        raise MalformedKeyError(f"invalid key name {name!r}")
    return int.from_bytes(_key_hash(name, _public_bytes(public_key))[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that can check note signatures."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey | bytes) -> Verifier:
        raw = _public_bytes(public_key)
        return cls(name=name, key_id=key_id(name, raw), public_key=raw)

    @property
    def vkey(self) -> str:
        """The published form: ``name+keyid+base64(0x01 || key)``."""
        return f"{self.name}+{self.key_id:08x}+{_b64encode(bytes([ED25519]) + self.public_key)}"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the name, type and key, in 16 groups of 4 hex digits. Its first 8 digits
        are the key ID; compare all of it with the fingerprint the committee publishes."""
        digest = _key_hash(self.name, self.public_key).hex().upper()
        return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def make_vkey(name: str, public_key: Ed25519PublicKey | bytes) -> str:
    """The verifier key string for publishing the log's public key."""
    return Verifier.from_public_key(name, public_key).vkey


def parse_vkey(vkey: str) -> Verifier:
    """Parse ``<name>+<hex key ID>+<base64(0x01 || 32-byte key)>``, checking the key ID."""
    if not isinstance(vkey, str):
        raise MalformedKeyError("a verifier key is a string")
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise MalformedKeyError("a verifier key looks like name+keyid+base64key")
    name, id_hex, key64 = parts
    if not is_valid_key_name(name):
        raise MalformedKeyError(f"invalid key name {name!r} in verifier key")
    if not _KEY_ID_RE.fullmatch(id_hex):
        raise MalformedKeyError("the key ID in a verifier key is 8 hex digits")
    raw = _b64decode(key64, "the key in the verifier key", MalformedKeyError)
    if len(raw) != 33 or raw[0] != ED25519:
        raise MalformedKeyError("the verifier key is not an Ed25519 key (type 0x01, 32 bytes)")
    verifier = Verifier.from_public_key(name, raw[1:])
    if verifier.key_id != int(id_hex, 16):
        raise MalformedKeyError("the key ID in the verifier key does not match its key")
    return verifier


# ---------------------------------------------------------------------------------------------
# Notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: who claims to have signed, and the raw signature (without ID)."""

    name: str
    key_id: int
    signature: bytes


def _check_characters(text: str, error: type[NoteError]) -> None:
    for ch in text:
        if ch < " " and ch != "\n":
            if ch == "\r":
                raise error("notes use LF line ends only (found CR)")
            raise error(f"notes must not contain control character U+{ord(ch):04X}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error("the note is not valid UTF-8") from None


def _as_text(signed: str | bytes) -> str:
    if isinstance(signed, (bytes, bytearray)):
        if len(signed) > MAX_NOTE_BYTES:
            raise MalformedNoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
        try:
            return bytes(signed).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNoteError("the note is not valid UTF-8") from None
    if not isinstance(signed, str):
        raise MalformedNoteError("a note is text")
    if len(signed) > MAX_NOTE_BYTES:
        raise MalformedNoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
    return signed


def _check_text(text: str) -> None:
    _check_characters(text, MalformedNoteError)
    if not text.endswith("\n"):
        raise MalformedNoteError("the note text must end with a newline")


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign note ``text`` (ending with a newline) with an Ed25519 key named ``name``: the
    signed note."""
    if not isinstance(text, str):
        raise MalformedNoteError("the note text must be a string")
    _check_text(text)
    if not is_valid_key_name(name):
        raise MalformedKeyError(f"invalid key name {name!r}")
    verifier = Verifier.from_public_key(name, private_key.public_key())
    signature = private_key.sign(text.encode("utf-8"))
    raw = verifier.key_id.to_bytes(4, "big") + signature
    return f"{text}\n{SIGNATURE_PREFIX}{name} {_b64encode(raw)}\n"


def parse_note(signed: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signatures, checking the format only."""
    msg = _as_text(signed)
    _check_characters(msg, MalformedNoteError)
    split = msg.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("no blank line between the note text and its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block:
        raise MalformedNoteError("the note has no signatures")
    if not block.endswith("\n"):
        raise MalformedNoteError("the note must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"more than {MAX_SIGNATURES} signatures")
    signatures: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for number, line in enumerate(lines, 1):
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNoteError(
                f"signature line {number} does not start with an em dash and a space"
            )
        parts = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise MalformedNoteError(f"signature line {number} is not '— <key name> <base64>'")
        name, sig64 = parts
        if not is_valid_key_name(name):
            raise MalformedNoteError(f"signature line {number} has an invalid key name")
        raw = _b64decode(sig64, f"the signature on line {number}", MalformedNoteError)
        if len(raw) < 5:
            raise MalformedNoteError(f"the signature on line {number} is too short")
        signature = NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])
        if (signature.name, signature.key_id) in seen:
            raise MalformedNoteError(f"two signatures by the same key ({name})")
        seen.add((signature.name, signature.key_id))
        signatures.append(signature)
    return text, signatures


def _verifiers(keys: Iterable[str | Verifier]) -> dict[tuple[str, int], Verifier]:
    if isinstance(keys, (str, Verifier)):
        keys = [keys]
    out: dict[tuple[str, int], Verifier] = {}
    for key in keys:
        verifier = key if isinstance(key, Verifier) else parse_vkey(key)
        out[(verifier.name, verifier.key_id)] = verifier
    return out


def open_note(
    signed: str | bytes, verifier_keys: Iterable[str | Verifier]
) -> tuple[str, list[str]]:
    """Check a signed note against trusted keys: ``(text, names of the keys that signed it)``.

    Signatures by keys not given are ignored. Raises :class:`MalformedNoteError`,
    :class:`InvalidSignatureError` (a known key's signature fails) or
    :class:`UnverifiedNoteError` (no known key signed).
    """
    known = _verifiers(verifier_keys)
    text, signatures = parse_note(signed)
    message = text.encode("utf-8")
    verified: list[str] = []
    for signature in signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, signature.signature):
            raise InvalidSignatureError(
                f"the signature by {signature.name} does not match the text: "
                "the note was altered, or signed with another key of the same ID"
            )
        verified.append(signature.name)
    if not verified:
        signers = ", ".join(f"{s.name} ({s.key_id:08x})" for s in signatures)
        expected = ", ".join(f"{name} ({kid:08x})" for name, kid in known) or "none"
        raise UnverifiedNoteError(
            f"no signature by a trusted key: signed by {signers}; trusted: {expected}"
        )
    return text, verified


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def format(self) -> str:
        return format_checkpoint(self.origin, self.size, self.root, self.extensions)


def format_checkpoint(origin: str, size: int, root: bytes, extensions: Sequence[str] = ()) -> str:
    """The note text of a checkpoint (to be signed with :func:`sign_note`)."""
    if not is_valid_key_name(origin):
        raise CheckpointError("the origin must be non-empty, without spaces, '+' or controls")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < MAX_TREE_SIZE:
        raise CheckpointError("the tree size must be an integer in [0, 2**63)")
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise CheckpointError(f"the root hash is {HASH_SIZE} bytes")
    if isinstance(extensions, str):
        raise CheckpointError("extensions are a list of lines")
    for line in extensions:
        if not isinstance(line, str) or not line or "\n" in line:
            raise CheckpointError("extension lines must be non-empty single lines")
        _check_characters(line, CheckpointError)
    lines = [origin, str(size), _b64encode(root), *extensions]
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (the text of a signed note, not the signed note)."""
    if not isinstance(text, str):
        raise CheckpointError("a checkpoint is text")
    _check_characters(text, CheckpointError)
    if not text.endswith("\n"):
        raise CheckpointError("the checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has at least three lines: origin, size, root hash")
    if any(not line for line in lines):
        raise CheckpointError("a checkpoint has no empty lines")
    origin, size_text, root64, *extensions = lines
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) >= MAX_TREE_SIZE:
        raise CheckpointError(f"the tree size {size_text!r} is not a decimal number")
    root = _b64decode(root64, "the root hash", CheckpointError)
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"the root hash is not {HASH_SIZE} bytes")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def open_checkpoint(
    signed: str | bytes, verifier_keys: Iterable[str | Verifier]
) -> tuple[Checkpoint, list[str]]:
    """:func:`open_note` then :func:`parse_checkpoint`."""
    text, names = open_note(signed, verifier_keys)
    return parse_checkpoint(text), names
