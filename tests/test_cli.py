"""The `jiefen` command, run as a user would run it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from portal.evidence.verify.note import parse_vkey

BIN = Path(sys.executable).parent / "jiefen"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "VAR_DIR": str(tmp_path / "var"), **env}
    full_env.pop("DATABASE_URL", None)
    full_env.pop("SECRET_KEY", None)
    return subprocess.run(
        [str(BIN), *args], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_is_idempotent_and_prints_logins(tmp_path: Path) -> None:
    first = run(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    for login in [
        "platform@jiefen.example",
        "admin@jiefen.example",
        "mediator@jiefen.example",
        "firm@jiefen.example",
        "13800138000",
    ]:
        assert login in first.stdout
    second = run(tmp_path, "demo")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    db = sqlite3.connect(tmp_path / "var" / "jiefen.db")
    assert db.execute("SELECT count(*) FROM users").fetchone() == (5,)
    assert db.execute("SELECT count(*) FROM committees").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM firms").fetchone() == (2,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert (tmp_path / "var" / "secret_key").exists()


def test_user_create(tmp_path: Path) -> None:
    assert run(tmp_path, "db", "upgrade").returncode == 0
    done = run(
        tmp_path,
        "user",
        "create",
        "--role",
        "platform_admin",
        "--name",
        "管理员",
        "--email",
        "Root@Example.com",
        JIEFEN_PASSWORD="Jade-Mountain-77",
    )
    assert done.returncode == 0, done.stderr
    assert "created user 1 (platform_admin)" in done.stdout
    weak = run(
        tmp_path,
        "user",
        "create",
        "--role",
        "consumer",
        "--name",
        "x",
        "--phone",
        "13800000000",
        JIEFEN_PASSWORD="12345678",
    )
    assert weak.returncode != 0 and "password" in weak.stderr
    dup = run(
        tmp_path,
        "user",
        "create",
        "--role",
        "consumer",
        "--name",
        "x",
        "--email",
        "root@example.com",
        JIEFEN_PASSWORD="Jade-Mountain-77",
    )
    assert dup.returncode != 0 and "already registered" in dup.stderr
    no_committee = run(
        tmp_path,
        "user",
        "create",
        "--role",
        "mediator",
        "--name",
        "x",
        "--email",
        "m@example.com",
        "--committee",
        "ZZ",
        JIEFEN_PASSWORD="Jade-Mountain-77",
    )
    assert no_committee.returncode != 0 and "no committee" in no_committee.stderr


def test_evidence_commands_verify_sign_and_rotate(tmp_path: Path) -> None:
    """Demo data (whose materials are in the log), then: a checkpoint, a full verification, a
    key rotation that keeps every file readable, and a verification that finds a changed file."""
    assert run(tmp_path, "demo").returncode == 0
    signed = run(tmp_path, "evidence", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    assert "/evidence-log\n" in signed.stdout and "\u2014 " in signed.stdout  # a signed note
    key = run(tmp_path, "evidence", "key")
    assert key.returncode == 0
    assert parse_vkey(key.stdout.strip()).name == "127.0.0.1:8000/evidence-log"
    # Every stored file is checked (the demo's materials, those of its closed and template
    # cases included) and, below, re-wrapped.
    blobs = [p for p in (tmp_path / "var" / "storage" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) > 4
    verified = run(tmp_path, "evidence", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK" in verified.stdout and f"{len(blobs)} files" in verified.stdout

    old = (tmp_path / "var" / "blob_master_keys").read_text().strip()
    new = run(tmp_path, "keys", "new").stdout.strip()
    both = {"BLOB_MASTER_KEYS": f"{old},{new}", "BLOB_MASTER_KEY_ID": new.split(":")[0]}
    rotated = run(tmp_path, "keys", "rotate", **both)
    assert rotated.returncode == 0, rotated.stderr
    assert f"re-wrapped {len(blobs)} files" in rotated.stdout
    only_new = {"BLOB_MASTER_KEYS": new}
    assert run(tmp_path, "evidence", "verify", **only_new).returncode == 0
    assert run(tmp_path, "evidence", "verify").returncode == 1  # the old key alone: unreadable

    assert len([p for p in blobs if p.is_file()]) == len(blobs)
    raw = bytearray(blobs[0].read_bytes())
    raw[-5] ^= 1
    blobs[0].write_bytes(bytes(raw))
    tampered = run(tmp_path, "evidence", "verify", **only_new)
    assert tampered.returncode == 1
    assert "MISMATCH" in tampered.stdout and "evidence item" in tampered.stdout


def test_upgrade_moves_files_of_the_first_storage(tmp_path: Path) -> None:
    """Files stored whole by the first version are moved into the chunked blob store."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from portal.crypto import derive_key

    data_key = "legacy-data-key-" + "z" * 32
    content = b"%PDF-1.4\n% legacy\n"
    sha = hashlib.sha256(content).hexdigest()
    legacy = tmp_path / "var" / "storage" / sha[:2] / sha
    legacy.parent.mkdir(parents=True)
    nonce = os.urandom(12)
    aead = AESGCM(derive_key(data_key, "jiefen/blobs/aes-gcm"))
    legacy.write_bytes(nonce + aead.encrypt(nonce, content, sha.encode()))
    done = run(tmp_path, "db", "upgrade", DATA_KEY=data_key)
    assert done.returncode == 0, done.stderr
    assert not legacy.exists()
    moved = tmp_path / "var" / "storage" / "blobs" / sha[:2] / sha[2:4] / sha
    assert moved.exists() and content not in moved.read_bytes()  # stored encrypted
