"""Receipts end to end: built from a real (in-memory) log, verified through the Python API and the
``jiefen-verify`` command, then forged in every way we could think of."""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portal.evidence.checkpoints import CheckpointSigner
from portal.evidence.tlog import MemoryHashStore
from portal.evidence.verify import cli
from portal.evidence.verify.leaf import (
    EVIDENCE_ADDED,
    decode_leaf,
    encode_leaf,
    evidence_body,
    leaf_hash_hex,
    metadata_digest,
    person_commitment,
)
from portal.evidence.verify.note import format_checkpoint, make_vkey, parse_vkey, sign_note
from portal.evidence.verify.receipt import (
    CHECK_LABELS,
    Report,
    dump_receipt,
    make_receipt,
    verify_receipt,
)
from tests.evidence.tsa_server import LocalTSA, local_tsa_fixture  # noqa: F401 (local_tsa)

ROOT = Path(__file__).resolve().parents[2]
VERIFY_DIR = ROOT / "portal" / "evidence" / "verify"
ORIGIN = "jiefen.test/evidence-log"
CASE = "SZ-2026-000123"
FILE = b"%PDF-1.7\n" + bytes(range(256)) * 5000  # about 1.2 MiB: more than one chunk
OTHER_FILE = FILE[:-1] + b"!"
T0 = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
SECRET = b"s" * 32


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


LOG_KEY = key(5)
ATTACKER_KEY = key(66)
LOG_VKEY = make_vkey(ORIGIN, LOG_KEY.public_key())


def evidence_leaf(content: bytes, prev: str | None, when: datetime) -> bytes:
    body = evidence_body(
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        metadata=metadata_digest({"name": "合同.pdf", "type": "application/pdf"}),
        uploader=person_commitment(SECRET, "user:7"),
    )
    return encode_leaf(EVIDENCE_ADDED, body, case=CASE, prev=prev, time=when)


@dataclass
class Log:
    store: MemoryHashStore
    leaves: list[bytes]
    index: int
    receipt: dict[str, Any]


def build_log(content: bytes = FILE, signing_key: Ed25519PrivateKey = LOG_KEY) -> Log:
    """A log with other cases' noise, this case's opening transition and the evidence."""
    opening = encode_leaf(
        "case.transition",
        {"from": "draft", "to": "filed"},
        case=CASE,
        prev=None,
        time=T0,
    )
    leaves = [
        encode_leaf("case.transition", {"n": i}, case=f"AB-2026-{i:06d}", prev=None, time=T0)
        for i in range(5)
    ]
    leaves.append(opening)
    leaves.append(evidence_leaf(content, leaf_hash_hex(opening), T0 + timedelta(minutes=1)))
    index = len(leaves) - 1
    leaves.extend(
        encode_leaf("minutes", {"n": i}, case=f"CD-2026-{i:06d}", prev=None, time=T0)
        for i in range(6)
    )
    store = MemoryHashStore()
    store.append(leaves[:4])
    store.append(leaves[4:])
    signer = CheckpointSigner(signing_key, ORIGIN)
    signed = signer.sign(store.size, store.tree_hash())
    receipt = make_receipt(
        leaf=leaves[index],
        index=index,
        tree_size=store.size,
        inclusion_proof=store.prove_record(store.size, index),
        checkpoint=signed.note,
        log_public_key=signer.vkey,
        case=CASE,
        issued_at=T0 + timedelta(minutes=2),
    )
    return Log(store, leaves, index, receipt)


@pytest.fixture(scope="module")
def log() -> Log:
    return build_log()


@pytest.fixture
def receipt(log: Log) -> dict[str, Any]:
    return copy.deepcopy(log.receipt)


def outcome(report: Report) -> dict[str, bool | None]:
    return {check.name: check.ok for check in report.checks}


GOOD = {
    "format": True,
    "leaf": True,
    "file": True,
    "inclusion": True,
    "signature": True,
    "log_key": True,
    "timestamp": None,
}


# --- Genuine receipts ------------------------------------------------------------------------


def test_genuine_receipt_verifies(receipt: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "合同.pdf"
    path.write_bytes(FILE)
    for file in (FILE, path, str(path), io.BytesIO(FILE)):
        report = verify_receipt(receipt, file, [LOG_VKEY])
        assert outcome(report) == GOOD
        assert report.ok
        assert report.trusted
        assert report.case == CASE
        assert report.verdict("en").startswith("VERIFIED: this file")
        assert report.verdict("zh").startswith("验证通过")
    as_bytes = dump_receipt(receipt)
    assert verify_receipt(as_bytes, FILE, [LOG_VKEY]).trusted
    assert verify_receipt(as_bytes.decode(), FILE, [parse_vkey(LOG_VKEY)]).trusted
    for check in report.checks:
        assert check.message_en
        assert check.message_zh
        assert check.label_zh == CHECK_LABELS[check.name][1]


def test_without_a_file(receipt: dict[str, Any]) -> None:
    report = verify_receipt(receipt, None, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "file": None}
    assert report.trusted
    assert "no file was checked" in report.verdict("en")
    assert "未核对文件" in report.verdict("zh")


def test_without_trusted_keys_the_fingerprint_must_be_compared(receipt: dict[str, Any]) -> None:
    report = verify_receipt(receipt, FILE)
    assert outcome(report) == {**GOOD, "log_key": None}
    assert report.ok
    assert not report.trusted
    fingerprint = parse_vkey(LOG_VKEY).fingerprint
    assert report.key_fingerprint == fingerprint
    log_key = report.check("log_key")
    assert fingerprint in log_key.message_en
    assert fingerprint in log_key.message_zh
    assert "compare" in log_key.message_en
    assert "逐位核对" in log_key.message_zh
    assert report.verdict("en").startswith("NOT YET TRUSTED")
    assert report.verdict("zh").startswith("尚未确认可信")


# --- Forgeries -------------------------------------------------------------------------------


def test_a_different_file_fails_the_hash_check(receipt: dict[str, Any]) -> None:
    report = verify_receipt(receipt, OTHER_FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "file": False}
    assert not report.ok
    message = report.check("file")
    assert hashlib.sha256(OTHER_FILE).hexdigest() in message.message_en
    assert "not the file that was logged" in message.message_en
    assert "不是当时存证的文件" in message.message_zh
    assert "File" in report.verdict("en")
    assert "文件核对" in report.verdict("zh")


def test_an_altered_leaf_fails_inclusion(receipt: dict[str, Any]) -> None:
    """Swap in a leaf for another file: it decodes and matches that file, but is not in the log."""
    leaf = decode_leaf(base64.b64decode(receipt["leaf"]))
    forged = evidence_leaf(OTHER_FILE, leaf.prev, leaf.time)
    receipt["leaf"] = base64.b64encode(forged).decode()
    report = verify_receipt(receipt, OTHER_FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "inclusion": False}
    assert "altered" in report.check("inclusion").message_en


def test_an_altered_proof_fails_inclusion(receipt: dict[str, Any]) -> None:
    proof = [base64.b64decode(h) for h in receipt["inclusion_proof"]]
    for i in range(len(proof)):
        bad = copy.deepcopy(receipt)
        changed = bytearray(proof[i])
        changed[31] ^= 0x80
        bad["inclusion_proof"][i] = base64.b64encode(bytes(changed)).decode()
        assert outcome(verify_receipt(bad, FILE, [LOG_VKEY]))["inclusion"] is False
    for proof_list in (
        receipt["inclusion_proof"][:-1],
        [*receipt["inclusion_proof"], receipt["inclusion_proof"][0]],
    ):
        bad = {**receipt, "inclusion_proof": proof_list}
        assert outcome(verify_receipt(bad, FILE, [LOG_VKEY]))["inclusion"] is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": 5}, "altered"),
        ({"index": 13}, "outside"),
        ({"tree_size": 12}, "checkpoint says 13"),
        ({"tree_size": 14}, "checkpoint says 13"),
    ],
)
def test_wrong_index_or_size(receipt: dict[str, Any], change: dict[str, int], message: str) -> None:
    report = verify_receipt({**receipt, **change}, FILE, [LOG_VKEY])
    assert outcome(report)["inclusion"] is False
    assert message in report.check("inclusion").message_en


def test_case_mismatch(receipt: dict[str, Any]) -> None:
    report = verify_receipt({**receipt, "case": "SZ-2026-000999"}, FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "leaf": False}
    assert "SZ-2026-000999" in report.check("leaf").message_zh


def test_a_forged_log_with_its_own_key() -> None:
    """An attacker builds a whole log around a forged file, signed with their own key under the
    committee's log name: it holds together, but it is not signed by the committee's key."""
    forged = build_log(OTHER_FILE, ATTACKER_KEY).receipt
    trusted = verify_receipt(forged, OTHER_FILE, [LOG_VKEY])
    assert outcome(trusted) == {**GOOD, "log_key": False}
    assert not trusted.ok
    assert "may be forged" in trusted.check("log_key").message_en
    assert "可能是伪造的" in trusted.check("log_key").message_zh
    untrusted = verify_receipt(forged, OTHER_FILE)
    assert untrusted.ok
    assert not untrusted.trusted
    assert untrusted.key_fingerprint != parse_vkey(LOG_VKEY).fingerprint


def test_a_checkpoint_re_signed_with_another_key(receipt: dict[str, Any]) -> None:
    """The real checkpoint text, signed by someone else but presented with the log's key."""
    text = receipt["checkpoint"].split("\n\n")[0] + "\n"
    receipt["checkpoint"] = sign_note(text, ORIGIN, ATTACKER_KEY)
    report = verify_receipt(receipt, FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "signature": False, "log_key": False}


def test_a_checkpoint_for_another_tree(log: Log, receipt: dict[str, Any]) -> None:
    """A genuine, signed checkpoint of an earlier size does not match the receipt's proof."""
    old = sign_note(format_checkpoint(ORIGIN, 12, log.store.tree_hash(12)), ORIGIN, LOG_KEY)
    report = verify_receipt({**receipt, "checkpoint": old}, FILE, [LOG_VKEY])
    assert outcome(report)["inclusion"] is False
    report = verify_receipt({**receipt, "checkpoint": old, "tree_size": 12}, FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "inclusion": False}


def test_altered_checkpoint_text(receipt: dict[str, Any]) -> None:
    lines = receipt["checkpoint"].split("\n")
    lines[1] = "14"
    report = verify_receipt({**receipt, "checkpoint": "\n".join(lines)}, FILE, [LOG_VKEY])
    assert outcome(report)["signature"] is False
    assert outcome(report)["log_key"] is False


def test_key_named_differently_from_the_log(receipt: dict[str, Any]) -> None:
    other = "other.test/log"
    text = receipt["checkpoint"].split("\n\n")[0] + "\n"
    receipt["checkpoint"] = sign_note(text, other, LOG_KEY)
    receipt["log_public_key"] = make_vkey(other, LOG_KEY.public_key())
    report = verify_receipt(receipt, FILE)
    assert outcome(report)["signature"] is False
    assert "other.test/log" in report.check("signature").message_en


MALFORMED: list[tuple[object, str]] = [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[]", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'{"format": "jiefen-receipt/2"}', "format"),
    (b'{"format": "jiefen-receipt/1"}', "missing fields"),
    (b'{"format": "jiefen-receipt/1", "format": "jiefen-receipt/1"}', "twice"),
    (b'{"format": NaN}', "NaN"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_receipts(data: bytes, reason: str) -> None:
    report = verify_receipt(data, FILE, [LOG_VKEY])  # type: ignore[arg-type]
    assert report.checks[0].name == "format"
    assert report.checks[0].ok is False
    assert reason in report.checks[0].message_en
    assert all(check.ok is None for check in report.checks[1:])
    assert [check.name for check in report.checks] == list(CHECK_LABELS)
    assert not report.ok
    assert report.verdict("zh").startswith("验证未通过")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"extra": 1}, "unexpected fields"),
        ({1: 1, "extra": 2}, "unexpected fields: 1, extra"),
        ({"index": -1}, "index"),
        ({"index": True}, "index"),
        ({"tree_size": "13"}, "tree_size"),
        ({"leaf": "not base64!"}, "leaf is not valid base64"),
        ({"leaf": "QQ"}, "leaf is not valid base64"),
        ({"leaf": "QR=="}, "canonical"),
        ({"inclusion_proof": "abc"}, "inclusion_proof"),
        ({"inclusion_proof": ["QQ=="]}, "32 bytes"),
        ({"checkpoint": 5}, "checkpoint"),
        ({"log_public_key": "nope"}, "log_public_key"),
        ({"case": 5}, "case"),
        ({"issued_at": "yesterday"}, "issued_at"),
        ({"issued_at": "2026-02-30T00:00:00Z"}, "issued_at"),
        ({"timestamp": ""}, "timestamp"),
        ({"timestamp": "QQ==", "tsa_certificates": "pem"}, "tsa_certificates"),
    ],
)
def test_malformed_fields(receipt: dict[str, Any], change: dict[str, Any], reason: str) -> None:
    report = verify_receipt({**receipt, **change}, FILE, [LOG_VKEY])
    assert report.checks[0].ok is False
    assert reason in report.checks[0].message_en


def test_an_undecodable_leaf_is_reported(receipt: dict[str, Any]) -> None:
    receipt["leaf"] = base64.b64encode(b"jiefen-leaf/1\n{}").decode()
    report = verify_receipt(receipt, FILE, [LOG_VKEY])
    assert report.check("leaf").ok is False
    assert report.check("file").ok is None
    assert report.check("inclusion").ok is False


def test_a_leaf_without_a_file(log: Log) -> None:
    index = 0
    receipt = make_receipt(
        leaf=log.leaves[index],
        index=index,
        tree_size=log.store.size,
        inclusion_proof=log.store.prove_record(log.store.size, index),
        checkpoint=log.receipt["checkpoint"],
        log_public_key=LOG_VKEY,
        case="AB-2026-000000",
    )
    assert verify_receipt(receipt, None, [LOG_VKEY]).trusted
    report = verify_receipt(receipt, FILE, [LOG_VKEY])
    assert report.check("file").ok is False
    assert "does not record a file" in report.check("file").message_en


def test_unreadable_file(receipt: dict[str, Any], tmp_path: Path) -> None:
    report = verify_receipt(receipt, tmp_path / "missing.pdf", [LOG_VKEY])
    assert report.check("file").ok is False
    assert "could not be read" in report.check("file").message_en


# --- Timestamps ------------------------------------------------------------------------------
# The tests below replace verify_timestamp with a fake to check how the receipt verifier uses
# it; test_receipt_with_a_real_timestamp (at the end) uses a real token from the local
# openssl TSA.


@pytest.fixture
def timestamp_module() -> Any:
    return pytest.importorskip("portal.evidence.verify.timestamp")


def with_token(receipt: dict[str, Any]) -> dict[str, Any]:
    return {
        **receipt,
        "timestamp": base64.b64encode(b"token").decode(),
        "tsa_certificates": ["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"],
    }


def test_timestamp_verified(
    receipt: dict[str, Any], timestamp_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake(token: bytes, message: bytes, extra: Any = None, roots: Any = None) -> Any:
        calls.append((token, message, extra, roots))
        return SimpleNamespace(
            time=T0 + timedelta(minutes=3), tsa_name="CN=Test TSA", chained_to_trusted_root=None
        )

    monkeypatch.setattr(timestamp_module, "verify_timestamp", fake)
    report = verify_receipt(with_token(receipt), FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "timestamp": True}
    assert calls == [
        (
            b"token",
            receipt["checkpoint"].encode("utf-8"),
            [b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"],
            None,
        )
    ]
    message = report.check("timestamp")
    assert "CN=Test TSA" in message.message_en
    assert "2026-05-01 08:33:00 UTC" in message.message_en
    assert "2026-05-01 16:33:00（北京时间）" in message.message_zh
    assert "not checked against a trusted root" in message.message_en

    def chained(token: bytes, message: bytes, extra: Any = None, roots: Any = None) -> Any:
        assert roots == [b"ROOT PEM"]
        return SimpleNamespace(
            time=T0 + timedelta(minutes=3), tsa_name="CN=Test TSA", chained_to_trusted_root=True
        )

    monkeypatch.setattr(timestamp_module, "verify_timestamp", chained)
    report = verify_receipt(with_token(receipt), FILE, [LOG_VKEY], tsa_roots_pem=[b"ROOT PEM"])
    assert report.check("timestamp").ok is True
    assert "trusted root" not in report.check("timestamp").message_en


def test_timestamp_refused(
    receipt: dict[str, Any], timestamp_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> Any:
        raise timestamp_module.TimestampError("the timestamp is for a different message.")

    monkeypatch.setattr(timestamp_module, "verify_timestamp", refuse)
    report = verify_receipt(with_token(receipt), FILE, [LOG_VKEY])
    assert outcome(report) == {**GOOD, "timestamp": False}
    assert "different message" in report.check("timestamp").message_en
    assert not report.ok


def test_timestamp_before_the_entry_is_refused(
    receipt: dict[str, Any], timestamp_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def early(*args: Any) -> Any:
        return SimpleNamespace(
            time=T0 - timedelta(hours=1), tsa_name="CN=TSA", chained_to_trusted_root=True
        )

    monkeypatch.setattr(timestamp_module, "verify_timestamp", early)
    report = verify_receipt(with_token(receipt), FILE, [LOG_VKEY])
    assert report.check("timestamp").ok is False
    assert "after the timestamp" in report.check("timestamp").message_en


def test_an_unexpected_error_in_the_timestamp_module_is_a_failure(
    receipt: dict[str, Any], timestamp_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise IndexError("index out of range")

    monkeypatch.setattr(timestamp_module, "verify_timestamp", broken)
    report = verify_receipt(with_token(receipt), FILE, [LOG_VKEY])
    assert report.check("timestamp").ok is False
    assert "IndexError" in report.check("timestamp").message_en


def test_a_garbage_token_fails_cleanly(receipt: dict[str, Any], timestamp_module: Any) -> None:
    report = verify_receipt(with_token(receipt), FILE, [LOG_VKEY])
    assert report.check("timestamp").ok is False
    assert report.check("timestamp").message_en.startswith("The timestamp does not verify")


# --- The command -----------------------------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portal.evidence.verify.cli", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.fixture
def files(receipt: dict[str, Any], tmp_path: Path) -> SimpleNamespace:
    receipt_path = tmp_path / "receipt.json"
    receipt_path.write_bytes(dump_receipt(receipt))
    file_path = tmp_path / "证据.pdf"
    file_path.write_bytes(FILE)
    other_path = tmp_path / "other.pdf"
    other_path.write_bytes(OTHER_FILE)
    key_path = tmp_path / "log.vkey"
    key_path.write_text(f"# the committee's log key\n\n{LOG_VKEY}\n", encoding="utf-8")
    return SimpleNamespace(receipt=receipt_path, file=file_path, other=other_path, key=key_path)


def test_cli_subprocess_genuine(files: SimpleNamespace) -> None:
    done = run_cli(files.receipt, files.file, "--key", LOG_VKEY)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("✓ 凭证格式：")
    assert sum(line.startswith("✓") for line in lines) == 6
    assert any(line.startswith("– 时间戳") for line in lines)
    assert lines[-1].startswith("验证通过")
    done = run_cli(files.receipt, files.file, "--key", files.key, "--lang", "en")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("VERIFIED")


def test_cli_subprocess_other_file(files: SimpleNamespace) -> None:
    done = run_cli(files.receipt, files.other, "--key", LOG_VKEY)
    assert done.returncode == 1
    assert "✗ 文件核对" in done.stdout
    assert "文件核对" in done.stdout.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_cli_subprocess_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{this is not json")
    done = run_cli(bad, "--lang", "en")
    assert done.returncode == 1
    assert "✗ Receipt format: This is not a valid receipt" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_subprocess_usage_errors(files: SimpleNamespace, tmp_path: Path) -> None:
    done = run_cli(tmp_path / "missing.json")
    assert done.returncode == 2
    assert "cannot read receipt" in done.stderr
    done = run_cli(files.receipt, tmp_path / "missing.pdf")
    assert done.returncode == 2
    assert "cannot read file" in done.stderr
    done = run_cli(files.receipt, "--key", "not-a-key")
    assert done.returncode == 2
    assert "invalid key" in done.stderr
    done = run_cli(files.receipt, "--lang", "fr")
    assert done.returncode == 2
    done = run_cli()
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_cli_in_process(files: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(files.receipt), str(files.file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["trusted"] is False
    assert report["log_key_fingerprint"] == parse_vkey(LOG_VKEY).fingerprint
    assert [c["ok"] for c in report["checks"]] == [True, True, True, True, True, None, None]
    assert cli.main([str(files.receipt), str(files.file), "--key", str(files.key), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trusted"] is True
    assert cli.main([str(files.receipt), str(files.other), "--lang", "en"]) == 1
    out = capsys.readouterr().out
    assert "✗ File: The file does NOT match" in out
    assert cli.main(["--help"]) == 0
    assert "RECEIPT" in capsys.readouterr().out


def test_cli_forged_receipt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "forged.json"
    path.write_bytes(dump_receipt(build_log(OTHER_FILE, ATTACKER_KEY).receipt))
    assert cli.main([str(path), "--key", LOG_VKEY, "--lang", "en"]) == 1
    out = capsys.readouterr().out
    assert "✗ Log key" in out
    assert out.strip().splitlines()[-1].startswith("NOT VERIFIED")
    assert cli.main([str(path)]) == 0  # nothing failed, but the verdict says: not trusted
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("尚未确认可信")


# --- The verifier's dependencies -------------------------------------------------------------

ALLOWED_THIRD_PARTY = {"cryptography", "_cffi_backend", "_openssl"}  # cryptography and its parts


def test_verifier_imports_only_itself_stdlib_and_cryptography() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "before = set(sys.modules)\n"
        "import portal.evidence.verify as package\n"
        "for info in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module('portal.evidence.verify.' + info.name)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    loaded = json.loads(done.stdout)
    assert "portal.evidence.verify.receipt" in loaded
    assert "portal.evidence.verify.cli" in loaded
    for name in loaded:
        top = name.split(".")[0]
        if top == "portal":
            assert name in ("portal", "portal.evidence") or name.startswith(
                "portal.evidence.verify"
            ), name
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, name


def test_verifier_source_imports() -> None:
    """The same rule, read from the source (including imports inside functions)."""
    for path in sorted(VERIFY_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 or node.level == 1, path
                names = [] if node.level else [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "portal":
                    assert name.startswith("portal.evidence.verify"), f"{path.name}: {name}"
                else:
                    allowed = top in sys.stdlib_module_names or top == "cryptography"
                    assert allowed, f"{path.name}: {name}"


async def test_receipt_with_a_real_timestamp(
    receipt: dict[str, Any], local_tsa: LocalTSA, tmp_path: Path
) -> None:
    """A checkpoint timestamped by a real RFC 3161 authority (openssl ts on loopback): the
    receipt verifies through the API and the CLI with the authority's root, and a receipt
    whose checkpoint was re-stamped for other bytes does not."""
    from portal.evidence.tsa import request_timestamp

    token = await request_timestamp(
        local_tsa.url, receipt["checkpoint"].encode("utf-8"), ca_certs_pem=[local_tsa.root_ca_pem]
    )
    stamped = {**receipt, "timestamp": base64.b64encode(token.token_der).decode()}
    report = verify_receipt(stamped, FILE, [LOG_VKEY], tsa_roots_pem=[local_tsa.root_ca_pem])
    assert outcome(report) == {**GOOD, "timestamp": True}

    receipt_path, file_path, root_path = (
        tmp_path / "stamped.json",
        tmp_path / "f.pdf",
        tmp_path / "tsa-root.pem",
    )
    receipt_path.write_bytes(dump_receipt(stamped))
    file_path.write_bytes(FILE)
    root_path.write_bytes(local_tsa.root_ca_pem)
    done = run_cli(receipt_path, file_path, "--key", LOG_VKEY, "--tsa-ca", root_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("✓ 时间戳") for line in done.stdout.splitlines())

    other = await request_timestamp(
        local_tsa.url, b"some other checkpoint\n", ca_certs_pem=[local_tsa.root_ca_pem]
    )
    forged = {**receipt, "timestamp": base64.b64encode(other.token_der).decode()}
    report = verify_receipt(forged, FILE, [LOG_VKEY], tsa_roots_pem=[local_tsa.root_ca_pem])
    assert report.check("timestamp").ok is False


def test_a_hostile_non_evidence_leaf_with_a_text_hash_does_not_crash() -> None:
    """A leaf of another type may carry any text as body.sha256: the verifier must report,
    not raise (found while writing docs/evidence-verification.md)."""
    hostile = encode_leaf(
        "session.note",  # a type this verifier does not know (the set is open)
        {"sha256": "沒有", "size": 3},
        case="SZ-2026-000001",
        prev=None,
        time=datetime(2026, 5, 1, tzinfo=UTC),
    )
    store = MemoryHashStore()
    store.append([hostile])
    signer = CheckpointSigner(LOG_KEY, ORIGIN)
    signed = signer.sign(1, store.tree_hash())
    forged = make_receipt(
        leaf=hostile,
        index=0,
        tree_size=1,
        inclusion_proof=[],
        checkpoint=signed.note,
        log_public_key=LOG_VKEY,
        case="SZ-2026-000001",
    )
    report = verify_receipt(forged, b"abc", [LOG_VKEY])
    assert report.check("file").ok is False


@pytest.mark.parametrize("value", [False, 0, "", {}])
def test_falsy_tsa_certificates_are_malformed(receipt: dict[str, Any], value: object) -> None:
    report = verify_receipt({**receipt, "tsa_certificates": value}, FILE, [LOG_VKEY])
    assert report.check("format").ok is False
