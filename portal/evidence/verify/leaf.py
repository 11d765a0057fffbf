"""The canonical, versioned encoding of an evidence-log leaf. Standard library only.

A leaf is the bytes ``b"jiefen-leaf/1\\n"`` followed by one JSON object in canonical form:
UTF-8, keys sorted, separators ``","`` and ``":"``, non-ASCII characters written as themselves
(``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``), no
insignificant whitespace, no trailing newline. Example (one line)::

    jiefen-leaf/1
    {"body":{"metadata":"…64 hex…","sha256":"…64 hex…","size":52311,"uploader":"…64 hex…"},
     "case":"SZ-2026-000123","prev":"…64 hex…","time":"2026-05-01T08:30:00.123456Z",
     "type":"evidence.added","v":1}

Fields, all required:

``v``
    The integer 1. A new version gets a new prefix line (``jiefen-leaf/2``) as well.
``type``
    What happened: a dotted lower-case name (``evidence.added``, ``case.transition``,
    ``minutes.confirmed``, ``agreement.signature``, ``recording``, ``checkpoint.note``...). The
    set is open; names match ``[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*`` and are at most 64
    characters.
``case``
    The case number (``SZ-2026-000123``: ASCII letters, digits and hyphens, at most 32
    characters), or ``null`` for a leaf about no case.
``prev``
    The leaf hash (RFC 9162: SHA-256 of 0x00 followed by the leaf bytes), lower-case hex, of the
    same case's previous leaf, or ``null`` for a case's first leaf. Always ``null`` when ``case``
    is ``null``. The chain lets a case's history be checked on its own, gaps included.
``time``
    When it happened, in UTC, RFC 3339 with exactly six fractional digits and ``Z``:
    ``2026-05-01T08:30:00.123456Z`` (microseconds, the precision of the database's timestamps;
    fixed width, so the strings sort as the times do).
``body``
    An object with the details. Values are strings, integers, ``null``, lists and objects,
    nested at most 8 deep. No floats, no booleans (use integers or strings), integers within
    ±(2**53 - 1) so every JSON reader keeps them exact. Object keys, here and anywhere in the
    leaf, are ASCII ``[A-Za-z0-9_.-]`` (1-64 characters), so the key order is the same in
    every language.

For ``evidence.added`` the body must hold ``sha256`` (lower-case hex SHA-256 of the file),
``size`` (bytes), ``metadata`` (hex SHA-256 of the canonical JSON of the file's metadata, see
:func:`metadata_digest`) and ``uploader`` (a :func:`person_commitment`, never a name); other keys
are allowed.

For ``minutes.confirmed`` (a session's minutes, confirmed by every party side) the body must
hold ``sha256`` and ``size`` (of the minutes text, UTF-8), ``meeting``, ``case_id`` and
``version`` (positive integers), ``mediator`` (a person commitment) and ``confirmations``: a
non-empty list of ``{"person", "side", "time"}`` objects, one per side (``claimant``,
``respondent``), in the order of the sides, each a person commitment, the side, and the time of
the confirmation in the leaf time format (see :func:`minutes_body`).

:func:`decode_leaf` is strict: it accepts only bytes that :func:`encode_leaf` would produce for
the same values, so one leaf has exactly one encoding and one hash. A leaf is at most 64 KiB.

People are named in leaves only by commitments, ``HMAC-SHA256(secret, person_id)`` with a random
secret kept per person (:func:`new_person_secret`). While the secret exists, the committee can
show that a leaf names a given person. Deleting that person's secret (for example when personal
data must be erased) leaves a value nobody can link to anyone, while the leaf bytes, and so every
hash, proof, checkpoint and receipt, stay exactly as they were and keep verifying.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

__all__ = [
    "AGREEMENT_SIGNATURE",
    "AUDIT_DIGEST",
    "EVIDENCE_ADDED",
    "KNOWN_TYPES",
    "LEAF_PREFIX",
    "MAX_LEAF_BYTES",
    "MINUTES_CONFIRMED",
    "MINUTES_SIDES",
    "RECORDING",
    "JsonValue",
    "Leaf",
    "LeafError",
    "agreement_signature_body",
    "canonical_json",
    "decode_leaf",
    "encode_leaf",
    "evidence_body",
    "format_time",
    "leaf_hash_hex",
    "matches_person_commitment",
    "metadata_digest",
    "minutes_body",
    "new_person_secret",
    "person_commitment",
    "recording_body",
]

LEAF_PREFIX = b"jiefen-leaf/1\n"
LEAF_VERSION = 1
MAX_LEAF_BYTES = 64 * 1024
MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 8
MIN_SECRET_BYTES = 16

EVIDENCE_ADDED = "evidence.added"
CASE_TRANSITION = "case.transition"
MINUTES_CONFIRMED = "minutes.confirmed"
AGREEMENT_SIGNATURE = "agreement.signature"
RECORDING = "recording"
CHECKPOINT_NOTE = "checkpoint.note"
AUDIT_DIGEST = "audit.digest"
#: The types in use today; others that match the name pattern are accepted as well.
KNOWN_TYPES = frozenset(
    {
        EVIDENCE_ADDED,
        CASE_TRANSITION,
        MINUTES_CONFIRMED,
        AGREEMENT_SIGNATURE,
        RECORDING,
        CHECKPOINT_NOTE,
        AUDIT_DIGEST,
    }
)

JsonValue: TypeAlias = str | int | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None

_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*", re.ASCII)
_CASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", re.ASCII)
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_HEX64_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_FIELDS = frozenset({"v", "type", "case", "prev", "time", "body"})


class LeafError(ValueError):
    """Leaf bytes or values that are not a valid, canonical leaf."""


# ---------------------------------------------------------------------------------------------
# Canonical JSON


def _check_value(value: object, where: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise LeafError(f"{where}: nested more than {MAX_DEPTH} deep")
    if value is None:
        return
    if isinstance(value, bool):
        raise LeafError(f"{where}: booleans are not allowed, use an integer or a string")
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise LeafError(f"{where}: integer outside ±(2**53 - 1)")
        return
    if isinstance(value, float):
        raise LeafError(f"{where}: floats are not allowed")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise LeafError(f"{where}: text that is not valid Unicode") from None
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
                raise LeafError(f"{where}: object keys must match [A-Za-z0-9_.-]{{1,64}}")
            _check_value(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
        return
    raise LeafError(f"{where}: {type(value).__name__} values are not allowed")


def _dumps(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_json(value: JsonValue) -> bytes:
    """The canonical JSON bytes of ``value`` (the rules of the leaf body, see the module)."""
    _check_value(value, "value")
    return _dumps(value)


def metadata_digest(metadata: Mapping[str, JsonValue]) -> str:
    """Hex SHA-256 of the canonical JSON of a file's metadata (name, type...), for a leaf."""
    if not isinstance(metadata, Mapping):
        raise LeafError("metadata must be an object")
    return hashlib.sha256(canonical_json(metadata)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Fields


def format_time(moment: datetime) -> str:
    """A leaf's time: UTC, microseconds, ``Z`` (``2026-05-01T08:30:00.123456Z``)."""
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise LeafError("time must be a timezone-aware datetime")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise LeafError("time must look like 2026-05-01T08:30:00.123456Z")
    try:
        moment = datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise LeafError(f"time {text!r} is not a real date and time") from None
    if format_time(moment) != text:
        raise LeafError(f"time {text!r} is not in canonical form")
    return moment


def _check_type(kind: object) -> str:
    if not isinstance(kind, str) or len(kind) > 64 or not _TYPE_RE.fullmatch(kind):
        raise LeafError(f"type {kind!r} is not a dotted lower-case name")
    return kind


def _check_case(case: object) -> str | None:
    if case is None:
        return None
    if not isinstance(case, str) or not _CASE_RE.fullmatch(case):
        raise LeafError(f"case {case!r} is not a case number")
    return case


def _check_hex64(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
        raise LeafError(f"{what} must be 64 lower-case hex digits")
    return value


def _check_evidence_body(body: Mapping[str, Any]) -> None:
    for key in ("sha256", "metadata", "uploader"):
        _check_hex64(body.get(key), f"body.{key}")
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise LeafError("body.size must be a non-negative integer")


def evidence_body(
    *, sha256: str, size: int, metadata: str, uploader: str, **extra: JsonValue
) -> dict[str, JsonValue]:
    """The body of an ``evidence.added`` leaf, checked."""
    body: dict[str, JsonValue] = {
        **extra,
        "sha256": sha256,
        "size": size,
        "metadata": metadata,
        "uploader": uploader,
    }
    _check_value(body, "body")
    _check_evidence_body(body)
    return body


MINUTES_SIDES = ("claimant", "respondent")
_CONFIRMATION_KEYS = frozenset({"person", "side", "time"})


def _check_count(value: object, what: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise LeafError(f"{what} must be an integer of at least {minimum}")


def _check_minutes_body(body: Mapping[str, Any]) -> None:
    _check_hex64(body.get("sha256"), "body.sha256")
    _check_hex64(body.get("mediator"), "body.mediator")
    _check_count(body.get("size"), "body.size", 0)
    for key in ("meeting", "case_id", "version"):
        _check_count(body.get(key), f"body.{key}", 1)
    confirmations = body.get("confirmations")
    if not isinstance(confirmations, (list, tuple)) or not confirmations:
        raise LeafError("body.confirmations must be a non-empty list")
    sides = []
    for i, item in enumerate(confirmations):
        where = f"body.confirmations[{i}]"
        if not isinstance(item, Mapping) or set(item) != _CONFIRMATION_KEYS:
            raise LeafError(f"{where} must be an object with person, side and time")
        _check_hex64(item["person"], f"{where}.person")
        if item["side"] not in MINUTES_SIDES:
            raise LeafError(f"{where}.side must be one of {', '.join(MINUTES_SIDES)}")
        _parse_time(item["time"])
        sides.append(item["side"])
    if sides != [side for side in MINUTES_SIDES if side in sides]:
        raise LeafError("body.confirmations: one per side, in the order claimant, respondent")


_SIGNATURE_KEYS = frozenset(
    {"sha256", "size", "case_id", "agreement", "version", "side", "signer", "method"}
)


def _check_signature_body(body: Mapping[str, Any]) -> None:
    missing = _SIGNATURE_KEYS - set(body)
    if missing:
        raise LeafError(f"body lacks {', '.join(sorted(missing))}")
    _check_hex64(body.get("sha256"), "body.sha256")
    _check_hex64(body.get("signer"), "body.signer")
    _check_count(body.get("size"), "body.size", 1)
    for key in ("case_id", "agreement", "version"):
        _check_count(body.get(key), f"body.{key}", 1)
    if body.get("side") not in MINUTES_SIDES:
        raise LeafError(f"body.side must be one of {', '.join(MINUTES_SIDES)}")
    method = body.get("method")
    if not isinstance(method, str) or not _KEY_RE.fullmatch(method.replace("+", ".")):
        raise LeafError("body.method must be a short word such as password+sms+name")


def agreement_signature_body(
    *,
    sha256: str,
    size: int,
    case_id: int,
    agreement: int,
    version: int,
    side: str,
    signer: str,
    method: str,
    **extra: JsonValue,
) -> dict[str, JsonValue]:
    """The body of an ``agreement.signature`` leaf, checked: the SHA-256 and size of the exact
    PDF signed (the file a court checks with the receipt), the agreement and its version, the
    side that signed, the signer's commitment and how they proved who they are."""
    body: dict[str, JsonValue] = {
        **extra,
        "sha256": sha256,
        "size": size,
        "case_id": case_id,
        "agreement": agreement,
        "version": version,
        "side": side,
        "signer": signer,
        "method": method,
    }
    _check_value(body, "body")
    _check_signature_body(body)
    return body


RECORDING_ROOMS = ("joint", "caucus_claimant", "caucus_respondent")
RECORDING_FILE_KINDS = ("mix", "audio", "video")
_RECORDING_KEYS = frozenset(
    {
        "case_id",
        "meeting",
        "recording",
        "room",
        "partial",
        "reason",
        "started",
        "stopped",
        "files",
        "consents",
    }
)
_RECORDING_FILE_KEYS = frozenset({"sha256", "size", "kind", "person"})
_CONSENT_KEYS = frozenset({"person", "agreed", "time"})


def _check_recording_body(body: Mapping[str, Any]) -> None:
    missing = _RECORDING_KEYS - set(body)
    if missing:
        raise LeafError(f"body lacks {', '.join(sorted(missing))}")
    for key in ("case_id", "meeting", "recording"):
        _check_count(body.get(key), f"body.{key}", 1)
    if body.get("room") not in RECORDING_ROOMS:
        raise LeafError(f"body.room must be one of {', '.join(RECORDING_ROOMS)}")
    if body.get("partial") not in ("yes", "no"):
        raise LeafError("body.partial must be yes or no")
    reason = body.get("reason")
    if not isinstance(reason, str) or (reason and not _KEY_RE.fullmatch(reason)):
        raise LeafError("body.reason must be a short word")
    _parse_time(body.get("started"))
    _parse_time(body.get("stopped"))
    files = body.get("files")
    if not isinstance(files, (list, tuple)) or not files:
        raise LeafError("body.files must be a non-empty list")
    for i, item in enumerate(files):
        where = f"body.files[{i}]"
        if not isinstance(item, Mapping) or set(item) != _RECORDING_FILE_KEYS:
            raise LeafError(f"{where} must be an object with sha256, size, kind and person")
        _check_hex64(item["sha256"], f"{where}.sha256")
        _check_count(item["size"], f"{where}.size", 0)
        if item["kind"] not in RECORDING_FILE_KINDS:
            raise LeafError(f"{where}.kind must be one of {', '.join(RECORDING_FILE_KINDS)}")
        if item["person"] is not None:
            _check_hex64(item["person"], f"{where}.person")
    consents = body.get("consents")
    if not isinstance(consents, (list, tuple)) or not consents:
        raise LeafError("body.consents must be a non-empty list")
    for i, item in enumerate(consents):
        where = f"body.consents[{i}]"
        if not isinstance(item, Mapping) or set(item) != _CONSENT_KEYS:
            raise LeafError(f"{where} must be an object with person, agreed and time")
        _check_hex64(item["person"], f"{where}.person")
        if item["agreed"] not in ("yes", "no"):
            raise LeafError(f"{where}.agreed must be yes or no")
        _parse_time(item["time"])


def recording_body(
    *,
    case_id: int,
    meeting: int,
    recording: int,
    room: str,
    partial: bool,
    reason: str,
    started: str,
    stopped: str,
    files: Sequence[Mapping[str, JsonValue]],
    consents: Sequence[Mapping[str, JsonValue]],
    **extra: JsonValue,
) -> dict[str, JsonValue]:
    """The body of a ``recording`` leaf, checked: a sealed recording of one room of a session,
    whether it is partial and why it stopped, when it started and stopped, each of its files
    (``{"sha256", "size", "kind": mix|audio|video, "person": commitment or null}``; each file
    also has its own ``evidence.added`` leaf and receipt) and every consent answer given
    (``{"person": commitment, "agreed": "yes"|"no", "time": format_time(...)}``, in order)."""
    body: dict[str, JsonValue] = {
        **extra,
        "case_id": case_id,
        "meeting": meeting,
        "recording": recording,
        "room": room,
        "partial": "yes" if partial else "no",
        "reason": reason,
        "started": started,
        "stopped": stopped,
        "files": [dict(item) for item in files],
        "consents": [dict(item) for item in consents],
    }
    _check_value(body, "body")
    _check_recording_body(body)
    return body


def minutes_body(
    *,
    sha256: str,
    size: int,
    meeting: int,
    case_id: int,
    version: int,
    mediator: str,
    confirmations: Sequence[Mapping[str, JsonValue]],
    **extra: JsonValue,
) -> dict[str, JsonValue]:
    """The body of a ``minutes.confirmed`` leaf, checked: the SHA-256 and size of the minutes
    text (UTF-8 bytes), the session, the case, the version, the mediator's commitment and
    one ``{"person": commitment, "side": ..., "time": format_time(...)}`` per side."""
    body: dict[str, JsonValue] = {
        **extra,
        "sha256": sha256,
        "size": size,
        "meeting": meeting,
        "case_id": case_id,
        "version": version,
        "mediator": mediator,
        "confirmations": [dict(item) for item in confirmations],
    }
    _check_value(body, "body")
    _check_minutes_body(body)
    return body


# ---------------------------------------------------------------------------------------------
# Leaves


@dataclass(frozen=True)
class Leaf:
    """A decoded leaf. ``body`` must not be changed (treat it as read-only)."""

    type: str
    case: str | None
    prev: str | None
    time: datetime
    body: Mapping[str, JsonValue] = field(default_factory=dict)

    def encode(self) -> bytes:
        return encode_leaf(self.type, self.body, case=self.case, prev=self.prev, time=self.time)

    @property
    def sha256(self) -> str | None:
        """The file hash of an evidence leaf (``body.sha256``), if there is one."""
        value = self.body.get("sha256")
        return value if isinstance(value, str) else None

    @property
    def size(self) -> int | None:
        """The file size of an evidence leaf (``body.size``), if there is one."""
        value = self.body.get("size")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def encode_leaf(
    type: str,
    body: Mapping[str, JsonValue],
    *,
    case: str | None,
    prev: str | None,
    time: datetime,
) -> bytes:
    """The canonical bytes of a leaf. Raises :class:`LeafError` for invalid values."""
    _check_type(type)
    _check_case(case)
    if prev is not None:
        _check_hex64(prev, "prev")
        if case is None:
            raise LeafError("prev must be null when case is null")
    if not isinstance(body, Mapping):
        raise LeafError("body must be an object")
    _check_value(body, "body")
    if type == EVIDENCE_ADDED:
        _check_evidence_body(body)
    elif type == MINUTES_CONFIRMED:
        _check_minutes_body(body)
    elif type == AGREEMENT_SIGNATURE:
        _check_signature_body(body)
    elif type == RECORDING:
        _check_recording_body(body)
    obj = {
        "v": LEAF_VERSION,
        "type": type,
        "case": case,
        "prev": prev,
        "time": format_time(time),
        "body": body,
    }
    data = LEAF_PREFIX + _dumps(obj)
    if len(data) > MAX_LEAF_BYTES:
        raise LeafError(f"a leaf is at most {MAX_LEAF_BYTES} bytes")
    return data


def _reject_constant(name: str) -> Any:
    raise LeafError(f"{name} is not allowed")


def _reject_float(text: str) -> Any:
    raise LeafError(f"floats are not allowed ({text})")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise LeafError(f"duplicate key {key!r}")
        out[key] = value
    return out


def decode_leaf(data: bytes) -> Leaf:
    """Decode and check leaf bytes; raises :class:`LeafError` unless they are exactly the
    canonical encoding of a valid leaf."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LeafError("a leaf is bytes")
    data = bytes(data)
    if len(data) > MAX_LEAF_BYTES:
        raise LeafError(f"a leaf is at most {MAX_LEAF_BYTES} bytes")
    if not data.startswith(LEAF_PREFIX):
        raise LeafError("not a jiefen-leaf/1 leaf (wrong first line)")
    try:
        text = data[len(LEAF_PREFIX) :].decode("utf-8")
        obj = json.loads(
            text,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_pairs,
        )
    except UnicodeDecodeError:
        raise LeafError("the leaf is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, LeafError):
            raise
        raise LeafError(f"the leaf is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LeafError("the leaf is not a JSON object")
    if set(obj) != _FIELDS:
        missing = sorted(_FIELDS - set(obj))
        extra = sorted(set(obj) - _FIELDS)
        raise LeafError(f"wrong fields (missing {missing}, unexpected {extra})")
    version = obj["v"]
    if not isinstance(version, int) or isinstance(version, bool) or version != LEAF_VERSION:
        raise LeafError(f"unsupported leaf version {version!r}")
    body = obj["body"]
    if not isinstance(body, dict):
        raise LeafError("body must be an object")
    case = _check_case(obj["case"])
    prev = obj["prev"]
    if prev is not None and not isinstance(prev, str):
        raise LeafError("prev must be a string or null")
    leaf = Leaf(
        type=_check_type(obj["type"]),
        case=case,
        prev=prev,
        time=_parse_time(obj["time"]),
        body=body,
    )
    if leaf.encode() != data:
        raise LeafError("the leaf is not in canonical form")
    return leaf


def leaf_hash_hex(data: bytes) -> str:
    """The RFC 9162 leaf hash of leaf bytes, in hex: the value the next leaf's ``prev`` holds."""
    return hashlib.sha256(b"\x00" + data).hexdigest()


# ---------------------------------------------------------------------------------------------
# People


def new_person_secret() -> bytes:
    """A fresh random secret for one person's commitments (32 bytes)."""
    return secrets.token_bytes(32)


def person_commitment(secret: bytes, person_id: str) -> str:
    """``HMAC-SHA256(secret, person_id)`` in hex: names a person in a leaf without naming them.

    ``secret`` is that person's own random secret (at least 16 bytes), used for nothing else.
    Deleting it makes the commitment unlinkable to anyone; leaves, proofs and receipts stay valid.
    """
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise LeafError(f"a person's secret is at least {MIN_SECRET_BYTES} random bytes")
    if not isinstance(person_id, str) or not person_id:
        raise LeafError("person_id must be a non-empty string")
    return hmac.new(secret, person_id.encode("utf-8"), hashlib.sha256).hexdigest()


def matches_person_commitment(secret: bytes, person_id: str, commitment: str) -> bool:
    """Whether ``commitment`` names ``person_id`` under ``secret`` (constant-time)."""
    expected = person_commitment(secret, person_id)
    return isinstance(commitment, str) and hmac.compare_digest(
        expected.encode("ascii"), commitment.encode("utf-8", "replace")
    )
