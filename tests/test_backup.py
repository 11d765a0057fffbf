"""`jiefen backup` and `jiefen restore`, run as an operator would: a demo instance is backed up,
restored into an empty one on the same kind of database, and the restored instance verifies
every proof and file. Damaged backups, wrong passphrases and full targets change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from portal.db import create_engine
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    require_service,
)

BIN = Path(sys.executable).parent / "jiefen"
PASSPHRASE = "Plum-Rain-Season-2026"


def jiefen(var: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "VAR_DIR": str(var), "BACKUP_PASSPHRASE": PASSPHRASE, **env}
    for name in ("DATABASE_URL", "SECRET_KEY", "DATA_KEY", "BLOB_MASTER_KEYS", "LOG_SIGNING_KEY"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [str(BIN), *args], env=full_env, capture_output=True, text=True, timeout=300, check=False
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            return {
                t: int(await conn.scalar(text(f'SELECT count(*) FROM "{t}"')) or 0)  # noqa: S608
                for t in tables
            }
    finally:
        await engine.dispose()


def counts(url: str) -> dict[str, int]:
    return asyncio.run(_counts(url))


def files_under(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "tmp"
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A demo instance on SQLite with a signed checkpoint, its backup and its key file."""
    root = tmp_path_factory.mktemp("backup")
    var = root / "source"
    ok(jiefen(var, "demo"))
    ok(jiefen(var, "evidence", "checkpoint"))
    out = ok(jiefen(var, "backup", str(root / "backup"), "--keys-to", str(root / "keys.jfk")))
    assert "sqlite database" in out and "keys sealed into" in out
    return var, root / "backup", root / "keys.jfk"


def test_restore_into_an_empty_instance_verifies_every_proof_and_file(
    source: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    var, backup, keys = source
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["database"] == "sqlite" and manifest["revision"]
    # The keys are not in the backup, only sealed beside it.
    data_key = (var / "data_key").read_text().strip()
    for path in backup.rglob("*"):
        if path.is_file():
            assert data_key.encode() not in path.read_bytes(), path
    assert data_key.encode() not in keys.read_bytes()
    assert oct(keys.stat().st_mode & 0o777) == "0o600"

    target = tmp_path / "restored"
    done = jiefen(target, "restore", str(backup), "--keys", str(keys))
    out = ok(done)
    assert "OK: the log, its records and files match the signed checkpoints" in out
    leaves = int(out.split(" leaves")[0].split()[-1].replace(",", ""))
    files = int(out.split(" files checked")[0].split()[-1].replace(",", ""))
    assert leaves > 0 and files > 0
    assert "files: " in done.stderr  # progress was shown

    source_url = f"sqlite+aiosqlite:///{var}/jiefen.db"
    target_url = f"sqlite+aiosqlite:///{target}/jiefen.db"
    restored, original = counts(target_url), counts(source_url)
    # The restore's verification is itself recorded.
    assert restored.pop("evidence_verifications") == original.pop("evidence_verifications") + 1
    assert restored == original
    assert files_under(target / "storage") == files_under(var / "storage")
    for name in ("secret_key", "data_key", "blob_master_keys", "log_signing_key"):
        assert (target / name).read_text() == (var / name).read_text(), name
    assert ok(jiefen(target, "evidence", "key")) == ok(jiefen(var, "evidence", "key"))
    assert "OK" in ok(jiefen(target, "evidence", "verify"))
    db = sqlite3.connect(target / "jiefen.db")
    assert db.execute("SELECT count(*) FROM users").fetchone() == (5,)


def test_a_damaged_backup_is_refused_before_anything_is_written(
    source: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, backup, keys = source
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    blob = next(p for p in (damaged / "storage" / "blobs").rglob("*") if p.is_file())
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 1
    blob.write_bytes(bytes(raw))
    target = tmp_path / "target"
    done = jiefen(target, "restore", str(damaged), "--keys", str(keys))
    assert done.returncode != 0
    assert "damaged" in done.stderr and "differs from its manifest" in done.stderr
    assert not target.exists()

    # The same change with a manifest rewritten to match passes the manifest and is caught
    # by the evidence log's verification, which restore always runs.
    manifest = json.loads((damaged / "manifest.json").read_text())
    name = blob.relative_to(damaged).as_posix()
    manifest["files"][name]["sha256"] = hashlib.sha256(blob.read_bytes()).hexdigest()
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    done = jiefen(target, "restore", str(damaged), "--keys", str(keys))
    assert done.returncode == 1
    assert "MISMATCH" in done.stdout


def test_wrong_passphrase_other_keys_and_full_targets_are_refused(
    source: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    var, backup, keys = source
    target = tmp_path / "target"
    done = jiefen(
        target, "restore", str(backup), "--keys", str(keys), BACKUP_PASSPHRASE="not-the-phrase!"
    )
    assert done.returncode != 0 and "wrong passphrase" in done.stderr
    assert not target.exists()

    # A key file of another backup (of another instance) does not open this one.
    other_var = tmp_path / "other"
    ok(jiefen(other_var, "db", "upgrade"))
    ok(jiefen(other_var, "backup", str(tmp_path / "b2"), "--keys-to", str(tmp_path / "k2")))
    done = jiefen(target, "restore", str(backup), "--keys", str(tmp_path / "k2"))
    assert done.returncode != 0 and "belongs to another backup" in done.stderr

    # A running instance is never overwritten.
    before = counts(f"sqlite+aiosqlite:///{var}/jiefen.db")
    done = jiefen(var, "restore", str(backup), "--keys", str(keys))
    assert done.returncode != 0 and "not empty" in done.stderr
    assert counts(f"sqlite+aiosqlite:///{var}/jiefen.db") == before

    # DATA_KEY set in the environment to another key would make the data unreadable.
    done = jiefen(
        target, "restore", str(backup), "--keys", str(keys), DATA_KEY="another-key-" + "z" * 40
    )
    assert done.returncode != 0 and "DATA_KEY" in done.stderr
    assert not (target / "jiefen.db").exists()

    # The key file is kept apart and the folder is new; a short passphrase is refused.
    done = jiefen(var, "backup", str(tmp_path / "b3"), "--keys-to", str(tmp_path / "b3" / "k"))
    assert done.returncode != 0 and "outside the backup folder" in done.stderr
    done = jiefen(var, "backup", str(backup), "--keys-to", str(tmp_path / "k4"))
    assert done.returncode != 0 and "exists already" in done.stderr
    done = jiefen(
        var,
        "backup",
        str(tmp_path / "b5"),
        "--keys-to",
        str(tmp_path / "k5"),
        BACKUP_PASSPHRASE="short",
    )
    assert done.returncode != 0 and "at least 12 characters" in done.stderr
    assert not (tmp_path / "b5").exists() and not (tmp_path / "k5").exists()


def test_postgresql_backup_and_restore(tmp_path: Path) -> None:
    if not postgres_available():
        require_service("PostgreSQL", "nothing listens on 127.0.0.1:5432")
    source_url = create_postgres_database()
    target_url = create_postgres_database()
    try:
        var = tmp_path / "source"
        ok(jiefen(var, "demo", DATABASE_URL=source_url))
        ok(jiefen(var, "evidence", "checkpoint", DATABASE_URL=source_url))
        out = ok(
            jiefen(
                var,
                "backup",
                str(tmp_path / "b"),
                "--keys-to",
                str(tmp_path / "k"),
                DATABASE_URL=source_url,
            )
        )
        assert "postgresql database" in out
        assert (tmp_path / "b" / "database.pgdump").exists()

        # Not into SQLite: the dump is PostgreSQL's.
        done = jiefen(
            tmp_path / "sqlite", "restore", str(tmp_path / "b"), "--keys", str(tmp_path / "k")
        )
        assert done.returncode != 0 and "postgresql" in done.stderr

        target = tmp_path / "target"
        out = ok(
            jiefen(
                target,
                "restore",
                str(tmp_path / "b"),
                "--keys",
                str(tmp_path / "k"),
                DATABASE_URL=target_url,
            )
        )
        assert "OK: the log, its records and files match" in out
        restored, original = counts(target_url), counts(source_url)
        assert restored.pop("evidence_verifications") == original.pop("evidence_verifications") + 1
        assert restored == original
        assert files_under(target / "storage") == files_under(var / "storage")
    finally:
        drop_postgres_database(source_url)
        drop_postgres_database(target_url)
