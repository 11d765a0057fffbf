"""Evidence receipts (存证凭证) and their offline verification.

Needs only the standard library and ``cryptography``. A receipt is a UTF-8 JSON object::

    {
      "format": "jiefen-receipt/1",
      "case": "SZ-2026-000123",
      "issued_at": "2026-05-01T08:31:02Z",
      "leaf": "<base64 of the leaf bytes>",
      "index": 1233,
      "tree_size": 1234,
      "inclusion_proof": ["<base64 of a 32-byte hash>", "..."],
      "checkpoint": "<the signed checkpoint note, complete, as one string>",
      "log_public_key": "<the log's verifier key: name+keyid+base64key>",
      "timestamp": "<base64 of a DER RFC 3161 TimeStampToken>",
      "tsa_certificates": ["-----BEGIN CERTIFICATE-----\\n...", "..."]
    }

``format``
    Always ``"jiefen-receipt/1"``.
``case``
    The case number, or ``null``; must be the ``case`` of the leaf.
``issued_at``
    When the receipt was made, RFC 3339 UTC with ``Z`` (informational, not signed).
``leaf``
    The log entry (:mod:`portal.evidence.verify.leaf`), base64.
``index``, ``tree_size``
    The leaf's position in the log (from 0) and the size of the checkpoint's tree.
``inclusion_proof``
    The RFC 9162 inclusion proof (audit path, from the leaf upwards), base64 hashes.
``checkpoint``
    The c2sp.org/tlog-checkpoint signed note whose tree the proof leads to.
``log_public_key``
    The vkey of the log's checkpoint key. Anyone can make a key, so a receipt is trusted only
    when this key (or the checkpoint's signature) matches the key the committee publishes.
``timestamp`` (optional)
    An RFC 3161 TimeStampToken over the exact UTF-8 bytes of ``checkpoint`` (the whole signed
    note), base64 of its DER.
``tsa_certificates`` (optional)
    PEM certificates the token may need (the TSA's certificate, intermediates).

No other fields are allowed. :func:`verify_receipt` returns a :class:`Report`: a list of checks,
each passed (True), failed (False) or not done (None), with a message in English and Chinese.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

from portal.evidence.verify.leaf import (
    AGREEMENT_SIGNATURE,
    MINUTES_CONFIRMED,
    RECORDING,
    Leaf,
    LeafError,
    decode_leaf,
)
from portal.evidence.verify.note import (
    NoteError,
    Verifier,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_vkey,
)
from portal.evidence.verify.proofs import HASH_SIZE, leaf_hash, verify_inclusion

__all__ = [
    "CHECK_LABELS",
    "RECEIPT_FORMAT",
    "Check",
    "Report",
    "dump_receipt",
    "make_receipt",
    "sha256_file",
    "verify_receipt",
]

RECEIPT_FORMAT = "jiefen-receipt/1"
MAX_RECEIPT_BYTES = 4 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
#: How far a leaf's own time may lie after its checkpoint's timestamp (clock differences).
CLOCK_TOLERANCE = timedelta(minutes=5)
BEIJING = timezone(timedelta(hours=8))

#: Check names, in the order they are reported, with their labels in English and Chinese.
CHECK_LABELS: dict[str, tuple[str, str]] = {
    "format": ("Receipt format", "凭证格式"),
    "leaf": ("Log entry", "日志记录"),
    "file": ("File", "文件核对"),
    "inclusion": ("Inclusion in the log", "包含证明"),
    "signature": ("Checkpoint signature", "检查点签名"),
    "log_key": ("Log key", "日志公钥"),
    "timestamp": ("Timestamp", "时间戳"),
}

_REQUIRED = frozenset(
    {
        "format",
        "case",
        "issued_at",
        "leaf",
        "index",
        "tree_size",
        "inclusion_proof",
        "checkpoint",
        "log_public_key",
    }
)
_OPTIONAL = frozenset({"timestamp", "tsa_certificates"})
_ISSUED_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z", re.ASCII)

FileInput = bytes | str | os.PathLike[str] | BinaryIO


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Check:
    """One check: its name (a key of :data:`CHECK_LABELS`), its outcome and what it means."""

    name: str
    ok: bool | None
    message_en: str
    message_zh: str

    @property
    def label_en(self) -> str:
        return CHECK_LABELS[self.name][0]

    @property
    def label_zh(self) -> str:
        return CHECK_LABELS[self.name][1]

    def label(self, lang: str) -> str:
        return self.label_zh if lang == "zh" else self.label_en

    def message(self, lang: str) -> str:
        return self.message_zh if lang == "zh" else self.message_en


@dataclass
class Report:
    """The outcome of :func:`verify_receipt`."""

    checks: list[Check] = field(default_factory=list)
    case: str | None = None
    index: int | None = None
    tree_size: int | None = None
    key_fingerprint: str | None = None

    def check(self, name: str) -> Check:
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def failed(self) -> list[Check]:
        return [item for item in self.checks if item.ok is False]

    @property
    def ok(self) -> bool:
        """Nothing that was checked failed (some checks may not have been done)."""
        return bool(self.checks) and not self.failed

    @property
    def trusted(self) -> bool:
        """Nothing failed and the checkpoint is signed by a key the caller trusts."""
        return self.ok and self.check("log_key").ok is True

    def verdict(self, lang: str = "en") -> str:
        zh = lang == "zh"
        if self.failed:
            labels = ("、" if zh else ", ").join(item.label(lang) for item in self.failed)
            if zh:
                return f"验证未通过（未通过的项目：{labels}）。请勿采信此凭证。"
            return f"NOT VERIFIED: failed: {labels}. Do not rely on this receipt."
        file_checked = self.check("file").ok is True
        if not self.trusted:
            fingerprint = self.key_fingerprint or "?"
            if zh:
                return (
                    "尚未确认可信：已检查的项目均通过，但日志公钥尚未与调解委员会公布的公钥核对"
                    f"（指纹 {fingerprint}）。请核对指纹，或提供委员会公布的公钥后重新验证。"
                )
            return (
                "NOT YET TRUSTED: everything checked holds, but the log key has not been "
                f"compared with the committee's published key (fingerprint {fingerprint}). "
                "Compare it, or verify again with the committee's key."
            )
        where_zh = f"（案件 {self.case}）" if self.case else ""
        where_en = f" (case {self.case})" if self.case else ""
        if file_checked:
            if zh:
                return f"验证通过：该文件与调解委员会存证日志第 {self.index} 号记录一致{where_zh}。"
            return (
                f"VERIFIED: this file is the one recorded at index {self.index} of the "
                f"committee's evidence log{where_en}."
            )
        if zh:
            case_zh = f"，案件 {self.case}" if self.case else ""
            return (
                f"验证通过：该记录在调解委员会存证日志中（第 {self.index} 号{case_zh}）；"
                "未核对文件。"
            )
        return (
            f"VERIFIED: the entry is at index {self.index} of the committee's evidence "
            f"log{where_en}; no file was checked."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "trusted": self.trusted,
            "verdict_en": self.verdict("en"),
            "verdict_zh": self.verdict("zh"),
            "case": self.case,
            "index": self.index,
            "tree_size": self.tree_size,
            "log_key_fingerprint": self.key_fingerprint,
            "checks": [
                {
                    "name": item.name,
                    "label_en": item.label_en,
                    "label_zh": item.label_zh,
                    "ok": item.ok,
                    "message_en": item.message_en,
                    "message_zh": item.message_zh,
                }
                for item in self.checks
            ],
        }


# ---------------------------------------------------------------------------------------------
# Parsing


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class _Receipt:
    case: str | None
    leaf: bytes
    index: int
    tree_size: int
    proof: list[bytes]
    checkpoint: str
    verifier: Verifier
    timestamp: bytes | None
    tsa_certificates: list[bytes]


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Malformed(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise _Malformed(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != value:
        raise _Malformed(f"{what} is not canonical base64")
    return raw


def _integer(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _Malformed(f"{what} must be a non-negative integer")
    return value


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Malformed(f"the field {key!r} appears twice")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise _Malformed(f"{name} is not allowed in a receipt")


def _load_json(raw: bytes | str) -> object:
    if len(raw) > MAX_RECEIPT_BYTES:
        raise _Malformed(f"the receipt is larger than {MAX_RECEIPT_BYTES} bytes")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("the receipt is not UTF-8 text") from None
    try:
        return json.loads(raw, object_pairs_hook=_unique_pairs, parse_constant=_reject_constant)
    except _Malformed:
        raise
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"the receipt is not valid JSON ({_reason(exc)})") from None


def _parse(receipt: object) -> _Receipt:
    data: object = receipt
    if isinstance(receipt, bytearray):
        data = _load_json(bytes(receipt))
    elif isinstance(receipt, (bytes, str)):
        data = _load_json(receipt)
    if not isinstance(data, Mapping):
        raise _Malformed("the receipt is not a JSON object")
    if data.get("format") != RECEIPT_FORMAT:
        raise _Malformed(f"the format is {data.get('format')!r}, not {RECEIPT_FORMAT!r}")
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise _Malformed(f"missing fields: {', '.join(missing)}")
    unexpected = sorted(map(str, set(data) - _REQUIRED - _OPTIONAL))
    if unexpected:
        raise _Malformed(f"unexpected fields: {', '.join(unexpected)}")
    case = data["case"]
    if case is not None and not isinstance(case, str):
        raise _Malformed("case must be a string or null")
    issued = data["issued_at"]
    if not isinstance(issued, str) or not _ISSUED_RE.fullmatch(issued):
        raise _Malformed("issued_at must be an RFC 3339 UTC time ending in Z")
    try:
        datetime.fromisoformat(issued.replace("Z", "+00:00"))
    except ValueError:
        raise _Malformed("issued_at is not a real date and time") from None
    proof = data["inclusion_proof"]
    if not isinstance(proof, list) or len(proof) > 64:
        raise _Malformed("inclusion_proof must be a list of at most 64 hashes")
    hashes = [_b64(item, f"inclusion_proof[{i}]") for i, item in enumerate(proof)]
    if any(len(h) != HASH_SIZE for h in hashes):
        raise _Malformed(f"every inclusion_proof hash must be {HASH_SIZE} bytes")
    checkpoint = data["checkpoint"]
    if not isinstance(checkpoint, str) or not checkpoint:
        raise _Malformed("checkpoint must be the signed note text")
    vkey = data["log_public_key"]
    if not isinstance(vkey, str):
        raise _Malformed("log_public_key must be a verifier key string")
    try:
        verifier = parse_vkey(vkey)
    except NoteError as exc:
        raise _Malformed(f"log_public_key is not a valid key: {exc}") from None
    token_field = data.get("timestamp")
    token = None if token_field is None else _b64(token_field, "timestamp")
    if token is not None and not token:
        raise _Malformed("timestamp is empty")
    certificates = data.get("tsa_certificates", [])
    if not isinstance(certificates, list) or not all(isinstance(c, str) for c in certificates):
        raise _Malformed("tsa_certificates must be a list of PEM strings")
    return _Receipt(
        case=case,
        leaf=_b64(data["leaf"], "leaf"),
        index=_integer(data["index"], "index"),
        tree_size=_integer(data["tree_size"], "tree_size"),
        proof=hashes,
        checkpoint=checkpoint,
        verifier=verifier,
        timestamp=token,
        tsa_certificates=[c.encode("utf-8") for c in certificates],
    )


# ---------------------------------------------------------------------------------------------
# Building


def make_receipt(
    *,
    leaf: bytes,
    index: int,
    tree_size: int,
    inclusion_proof: Sequence[bytes],
    checkpoint: str,
    log_public_key: str,
    case: str | None,
    issued_at: datetime | None = None,
    timestamp: bytes | None = None,
    tsa_certificates: Sequence[str] = (),
) -> dict[str, Any]:
    """A receipt as a JSON-ready dict (see the module for the fields)."""
    moment = (issued_at or datetime.now(UTC)).astimezone(UTC)
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "case": case,
        "issued_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "leaf": base64.b64encode(leaf).decode("ascii"),
        "index": index,
        "tree_size": tree_size,
        "inclusion_proof": [base64.b64encode(h).decode("ascii") for h in inclusion_proof],
        "checkpoint": checkpoint,
        "log_public_key": log_public_key,
    }
    if timestamp is not None:
        receipt["timestamp"] = base64.b64encode(timestamp).decode("ascii")
        if tsa_certificates:
            receipt["tsa_certificates"] = list(tsa_certificates)
    return receipt


def dump_receipt(receipt: Mapping[str, Any]) -> bytes:
    """The receipt file's bytes: indented UTF-8 JSON ending with a newline."""
    return (json.dumps(receipt, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Checks


def sha256_file(file: FileInput) -> tuple[str, int]:
    """Hex SHA-256 and size of file contents, a path or a binary file, read 1 MiB at a time."""
    if isinstance(file, bytes):
        return hashlib.sha256(file).hexdigest(), len(file)
    if isinstance(file, (str, os.PathLike)):
        with Path(file).open("rb") as handle:
            return sha256_file(handle)
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _reason(exc: BaseException) -> str:
    return str(exc).rstrip(".")


def _show_time(moment: datetime, lang: str) -> str:
    if lang == "zh":
        return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S（北京时间）")
    utc = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    beijing = moment.astimezone(BEIJING).strftime("%H:%M:%S")
    return f"{utc} ({beijing} Beijing time)"


def _skipped(name: str, en: str = "", zh: str = "") -> Check:
    return Check(
        name,
        None,
        en or "Not checked, because an earlier check failed.",
        zh or "因前面的检查未通过，未进行此项检查。",
    )


def _check_leaf(parsed: _Receipt) -> tuple[Check, Leaf | None]:
    try:
        leaf = decode_leaf(parsed.leaf)
    except LeafError as exc:
        return (
            Check(
                "leaf",
                False,
                f"The log entry in the receipt cannot be read: {_reason(exc)}.",
                f"凭证中的日志记录无法解读（技术细节：{_reason(exc)}）。",
            ),
            None,
        )
    if leaf.case != parsed.case:
        return (
            Check(
                "leaf",
                False,
                f"The receipt names case {parsed.case}, but the log entry is about case "
                f"{leaf.case}.",
                f"凭证标明的案件为 {parsed.case}，但日志记录所属案件为 {leaf.case}。",
            ),
            leaf,
        )
    case_en = f"case {leaf.case}" if leaf.case else "no case"
    case_zh = f"案件 {leaf.case}" if leaf.case else "不属于任何案件"
    what_en, what_zh = _describe(leaf)
    return (
        Check(
            "leaf",
            True,
            f"The log entry is a valid '{leaf.type}' record ({case_en}), made at "
            f"{_show_time(leaf.time, 'en')} according to the log.{what_en}",
            f"记录有效：类型 {leaf.type}，{case_zh}，日志记载的时间为 "
            f"{_show_time(leaf.time, 'zh')}。{what_zh}",
        ),
        leaf,
    )


_SIDE_NAMES = {"claimant": ("the claimant", "申请人"), "respondent": ("the firm", "被申请人")}


def _describe(leaf: Leaf) -> tuple[str, str]:
    """What a leaf of a known type records, in words (for the log entry line)."""
    if leaf.type == AGREEMENT_SIGNATURE:
        body = leaf.body
        side_en, side_zh = _SIDE_NAMES.get(str(body.get("side")), ("a party", "一方当事人"))
        return (
            f" It records the signature of {side_en} on version {body.get('version')} of "
            f"settlement agreement {body.get('agreement')}; the file to check is the PDF of "
            f"that version as signed ({body.get('size')} bytes).",
            f"该记录载明：{side_zh}签署了第 {body.get('agreement')} 号调解协议的第 "
            f"{body.get('version')} 版；应核对的文件是所签署的该版 PDF"
            f"（{body.get('size')} 字节）。",
        )
    if leaf.type == RECORDING:
        body = leaf.body
        files = body.get("files")
        consents = body.get("consents")
        count = len(files) if isinstance(files, (list, tuple)) else 0
        agreed = len(consents) if isinstance(consents, (list, tuple)) else 0
        partial = body.get("partial") == "yes"
        return (
            f" It records recording {body.get('recording')} of session {body.get('meeting')} "
            f"({body.get('room')}), {'partial' if partial else 'complete'}: {count} files, each "
            f"with a receipt of its own, and the {agreed} consent answers given.",
            f"该记录载明：第 {body.get('meeting')} 场调解的第 {body.get('recording')} 号录音"
            f"（{'不完整' if partial else '完整'}），共 {count} 个文件（各有存证回执），"
            f"以及参与人作出的 {agreed} 项同意表示。",
        )
    if leaf.type != MINUTES_CONFIRMED:
        return "", ""
    body = leaf.body
    # decode_leaf has checked the body (portal.evidence.verify.leaf.minutes_body).
    confirmations = body.get("confirmations")
    items = confirmations if isinstance(confirmations, (list, tuple)) else []
    sides = [str(c.get("side")) for c in items if isinstance(c, Mapping)]
    names_en = " and ".join(_SIDE_NAMES[side][0] for side in sides if side in _SIDE_NAMES)
    names_zh = "、".join(_SIDE_NAMES[side][1] for side in sides if side in _SIDE_NAMES)
    return (
        f" It records the minutes of session {body['meeting']}, version {body['version']}, "
        f"as confirmed by {names_en}; the file to check is the text of those minutes "
        f"({body['size']} bytes, UTF-8).",
        f"该记录载明：第 {body['meeting']} 场调解的笔录（第 {body['version']} 版）已经"
        f"{names_zh}确认；应核对的文件是该笔录的文本（UTF-8，{body['size']} 字节）。",
    )


def _check_file(leaf: Leaf | None, file: FileInput | None) -> Check:
    if file is None:
        return Check(
            "file",
            None,
            "No file was given, so the file itself was not checked.",
            "未提供文件，因此未核对文件本身。",
        )
    if leaf is None:
        return _skipped("file")
    expected, expected_size = leaf.sha256, leaf.size
    if expected is None or expected_size is None:
        return Check(
            "file",
            False,
            f"The log entry ('{leaf.type}') does not record a file, so no file can match it.",
            f"该日志记录（类型 {leaf.type}）未记载任何文件，无法与文件核对。",
        )
    try:
        actual, size = sha256_file(file)
    except OSError as exc:
        return Check(
            "file",
            False,
            f"The file could not be read: {exc.strerror or exc}.",
            f"无法读取文件（技术细节：{exc.strerror or exc}）。",
        )
    # Compared as bytes: a hostile leaf of another type may hold any text in body.sha256.
    if (
        not hmac.compare_digest(actual.encode(), expected.encode("utf-8", "replace"))
        or size != expected_size
    ):
        return Check(
            "file",
            False,
            f"The file does NOT match the log entry: its SHA-256 is {actual} ({size} bytes), "
            f"the log recorded {expected} ({expected_size} bytes). This is not the file that "
            "was logged.",
            f"文件与日志记录不符：该文件的 SHA-256 值为 {actual}（{size} 字节），日志记载的是 "
            f"{expected}（{expected_size} 字节）。这不是当时存证的文件。",
        )
    return Check(
        "file",
        True,
        f"The file's SHA-256 ({actual}) and size ({size} bytes) are those in the log entry.",
        f"文件的 SHA-256 值（{actual}）和大小（{size} 字节）与日志记录一致。",
    )


def _check_inclusion(parsed: _Receipt) -> Check:
    try:
        text, _ = parse_note(parsed.checkpoint)
        checkpoint = parse_checkpoint(text)
    except NoteError as exc:
        return Check(
            "inclusion",
            False,
            f"The checkpoint in the receipt is malformed: {_reason(exc)}.",
            f"凭证中的检查点格式不正确（技术细节：{_reason(exc)}）。",
        )
    if checkpoint.size != parsed.tree_size:
        return Check(
            "inclusion",
            False,
            f"The receipt says the tree has {parsed.tree_size} entries, but its checkpoint says "
            f"{checkpoint.size}.",
            f"凭证称日志树共有 {parsed.tree_size} 条记录，但检查点记载为 {checkpoint.size} 条。",
        )
    if parsed.index >= checkpoint.size:
        return Check(
            "inclusion",
            False,
            f"The entry's index {parsed.index} is outside the checkpoint's tree of "
            f"{checkpoint.size} entries.",
            f"记录序号 {parsed.index} 超出了检查点所记载的 {checkpoint.size} 条记录的范围。",
        )
    if not verify_inclusion(
        parsed.index, checkpoint.size, leaf_hash(parsed.leaf), parsed.proof, checkpoint.root
    ):
        return Check(
            "inclusion",
            False,
            "The inclusion proof does not lead from this log entry to the checkpoint's root "
            "hash: the entry, the proof or the checkpoint was altered.",
            "包含证明无法从该日志记录推导出检查点的根哈希：日志记录、证明或检查点已被改动。",
        )
    root = checkpoint.root.hex()
    return Check(
        "inclusion",
        True,
        f"The entry is number {parsed.index} in the log's tree of {checkpoint.size} entries "
        f"(root hash {root}).",
        f"该记录是日志树（共 {checkpoint.size} 条记录，根哈希 {root}）中的"
        f"第 {parsed.index} 号记录。",
    )


def _check_signature(parsed: _Receipt) -> Check:
    verifier = parsed.verifier
    try:
        text, _ = open_note(parsed.checkpoint, [verifier])
        origin = parse_checkpoint(text).origin
    except NoteError as exc:
        return Check(
            "signature",
            False,
            "The checkpoint's signature does not verify with the key in the receipt: "
            f"{_reason(exc)}.",
            f"无法用凭证所附公钥验证检查点签名（技术细节：{_reason(exc)}）。",
        )
    if origin != verifier.name:
        return Check(
            "signature",
            False,
            f"The key is named {verifier.name}, but the checkpoint is for the log {origin}.",
            f"公钥名称为 {verifier.name}，但检查点属于日志 {origin}。",
        )
    return Check(
        "signature",
        True,
        f"The checkpoint is validly signed by the key in the receipt ({verifier.name}).",
        f"签名有效，签名公钥为凭证所附公钥（{verifier.name}）。",
    )


def _check_log_key(parsed: _Receipt, trusted: list[Verifier] | None) -> Check:
    fingerprint = parsed.verifier.fingerprint
    if trusted is None:
        return Check(
            "log_key",
            None,
            f"Not compared with a trusted key. The receipt's own log key has the fingerprint "
            f"{fingerprint}. Anyone can make a key: compare this fingerprint, digit by digit, "
            "with the one the mediation committee publishes. Only if they are identical is the "
            "receipt genuine.",
            f"未与可信公钥比对。凭证自带的日志公钥指纹为 {fingerprint}。任何人都可以自行生成"
            "密钥：请将此指纹与调解委员会公布的指纹逐位核对，完全一致时凭证方为真实。",
        )
    try:
        _, names = open_note(parsed.checkpoint, trusted)
    except NoteError as exc:
        return Check(
            "log_key",
            False,
            "The checkpoint is NOT signed by any of the keys you trust. The receipt's key has "
            f"the fingerprint {fingerprint}. The receipt may be forged. ({_reason(exc)})",
            f"检查点并非由您信任的公钥签署。凭证所附公钥指纹为 {fingerprint}。"
            f"该凭证可能是伪造的。（技术细节：{_reason(exc)}）",
        )
    who = ", ".join(names)
    return Check(
        "log_key",
        True,
        f"The checkpoint is signed by a key you trust ({who}): this is the committee's log.",
        f"检查点由您信任的公钥（{who}）签署，确为调解委员会的存证日志。",
    )


def _check_timestamp(
    parsed: _Receipt, leaf: Leaf | None, tsa_roots_pem: Sequence[bytes] | None
) -> Check:
    if parsed.timestamp is None:
        return Check(
            "timestamp",
            None,
            "The receipt has no timestamp from a time-stamping authority; the time in the log "
            "entry is the log's own statement.",
            "凭证未附时间戳机构出具的时间戳；日志记录中的时间仅为日志自身的记载。",
        )
    try:
        # Imported here: the rest of the verifier works without it.
        from portal.evidence.verify.timestamp import TimestampError, verify_timestamp
    except ImportError:
        return Check(
            "timestamp",
            None,
            "This verifier cannot check timestamps (its timestamp module is missing).",
            "本验证程序无法核验时间戳（缺少时间戳模块）。",
        )
    try:
        result = verify_timestamp(
            parsed.timestamp,
            parsed.checkpoint.encode("utf-8"),
            parsed.tsa_certificates or None,
            list(tsa_roots_pem) if tsa_roots_pem is not None else None,
        )
    except TimestampError as exc:
        return Check(
            "timestamp",
            False,
            f"The timestamp does not verify: {_reason(exc)}.",
            f"时间戳验证未通过（技术细节：{_reason(exc)}）。",
        )
    except Exception as exc:  # the token comes from the receipt: never crash the verifier
        return Check(
            "timestamp",
            False,
            f"The timestamp could not be checked ({type(exc).__name__}: {_reason(exc)}).",
            f"无法核验时间戳（技术细节：{type(exc).__name__}: {_reason(exc)}）。",
        )
    if leaf is not None and leaf.time > result.time + CLOCK_TOLERANCE:
        return Check(
            "timestamp",
            False,
            f"The log entry claims the time {_show_time(leaf.time, 'en')}, after the timestamp "
            f"of the checkpoint that contains it ({_show_time(result.time, 'en')}).",
            f"日志记录声称的时间（{_show_time(leaf.time, 'zh')}）晚于包含它的检查点的时间戳"
            f"（{_show_time(result.time, 'zh')}），二者矛盾。",
        )
    en = (
        f"The time-stamping authority {result.tsa_name} certifies that the checkpoint, and so "
        f"this entry, existed at {_show_time(result.time, 'en')}."
    )
    zh = (
        f"时间戳机构（{result.tsa_name}）证明该检查点（因而也包括本记录）在 "
        f"{_show_time(result.time, 'zh')} 已经存在。"
    )
    if result.chained_to_trusted_root is not True:
        en += (
            " The authority's certificate was not checked against a trusted root certificate; "
            "give the authority's root certificate to check it."
        )
        zh += "未依据可信根证书核验该机构的证书；如需核验，请提供该机构的根证书。"
    return Check("timestamp", True, en, zh)


def verify_receipt(
    receipt: Mapping[str, Any] | bytes | str,
    file: FileInput | None = None,
    trusted_vkeys: Sequence[str | Verifier] | None = None,
    *,
    tsa_roots_pem: Sequence[bytes] | None = None,
) -> Report:
    """Check a receipt (a dict, or the JSON bytes or text), optionally against the file
    (contents, a path or a binary file) and the log keys the committee publishes.

    Malformed ``trusted_vkeys`` raise :class:`~portal.evidence.verify.note.NoteError`: they
    come from the caller, not from the receipt. Nothing in the receipt makes this raise.
    """
    trusted = (
        None
        if trusted_vkeys is None
        else [k if isinstance(k, Verifier) else parse_vkey(k) for k in trusted_vkeys]
    )
    report = Report()
    try:
        parsed = _parse(receipt)
    except _Malformed as exc:
        report.checks.append(
            Check(
                "format",
                False,
                f"This is not a valid receipt: {_reason(exc)}.",
                f"这不是有效的存证凭证（技术细节：{_reason(exc)}）。",
            )
        )
        report.checks.extend(_skipped(name) for name in CHECK_LABELS if name != "format")
        return report
    report.case = parsed.case
    report.index = parsed.index
    report.tree_size = parsed.tree_size
    report.key_fingerprint = parsed.verifier.fingerprint
    report.checks.append(
        Check(
            "format",
            True,
            f"The receipt is a well-formed {RECEIPT_FORMAT} document.",
            f"格式正确（{RECEIPT_FORMAT}）。",
        )
    )
    leaf_check, leaf = _check_leaf(parsed)
    report.checks.append(leaf_check)
    report.checks.append(_check_file(leaf, file))
    report.checks.append(_check_inclusion(parsed))
    report.checks.append(_check_signature(parsed))
    report.checks.append(_check_log_key(parsed, trusted))
    report.checks.append(_check_timestamp(parsed, leaf, tsa_roots_pem))
    return report
