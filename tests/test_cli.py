"""The `jiefen` command, run as a user would run it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

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
