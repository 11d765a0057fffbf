"""``jiefen backup`` and ``jiefen restore``: a consistent snapshot and its return.

A backup is a folder::

    manifest.json        what is inside: format, time, database kind, schema revision, and the
                         size and SHA-256 of every other file (restore checks them all first)
    database.sqlite      SQLite: a copy by SQLite's online backup API (consistent while the
                         portal writes), or
    database.pgdump      PostgreSQL: ``pg_dump --format=custom`` (one snapshot transaction)
    storage/...          the blob store's files (already encrypted) and recordings

The database is copied first and the files after: blobs are written before the rows that name
them and never change, so every file the snapshot names is there (later uploads add extras).

The keys (``SECRET_KEY``, ``DATA_KEY``, ``BLOB_MASTER_KEYS``, ``LOG_SIGNING_KEY``) go to a
separate file, sealed with a passphrase (scrypt, AES-256-GCM), to be kept apart from the
backup: with both, anyone reads the personal data. The manifest holds the keys' fingerprint so
that restore refuses a key file of another backup.

Restore fills an empty instance (the configured database and ``STORAGE_DIR``; the keys into
``VAR_DIR``), migrates it to this version's schema and verifies the evidence log and every
file against the signed checkpoints.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from portal.settings import Settings

FORMAT = "jiefen-backup/1"
KEYS_FORMAT = "jiefen-backup-keys/1"
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite"
PG_FILE = "database.pgdump"
KEY_FILES = {
    "secret_key": "secret_key",
    "data_key": "data_key",
    "blob_master_keys": "blob_master_keys",
    "log_signing_key": "log_signing_key",
}
ENV_NAMES = {
    "secret_key": "SECRET_KEY",
    "data_key": "DATA_KEY",
    "blob_master_keys": "BLOB_MASTER_KEYS",
    "log_signing_key": "LOG_SIGNING_KEY",
}
SCRYPT_N = 2**15
MIN_PASSPHRASE = 12

Progress = Callable[[str, int, int], None]


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    keys_path: Path
    database: str
    revision: str | None
    files: int
    bytes: int


# -- keys -------------------------------------------------------------------------------------


def _kdf(salt: bytes, n: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=8, p=1)


def seal_keys(keys: dict[str, str], passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(salt, SCRYPT_N).derive(passphrase.encode())
    plain = json.dumps(keys, sort_keys=True).encode()
    sealed = AESGCM(key).encrypt(nonce, plain, KEYS_FORMAT.encode())
    envelope = {
        "format": KEYS_FORMAT,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": 8, "p": 1},
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "sealed": base64.b64encode(sealed).decode(),
    }
    return json.dumps(envelope, indent=1).encode()


def open_keys(data: bytes, passphrase: str) -> dict[str, str]:
    try:
        envelope = json.loads(data)
        if envelope.get("format") != KEYS_FORMAT:
            raise ValueError
        salt = base64.b64decode(envelope["salt"])
        nonce = base64.b64decode(envelope["nonce"])
        sealed = base64.b64decode(envelope["sealed"])
        n = int(envelope["kdf"]["n"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError("this is not a Jiefen backup key file") from exc
    try:
        plain = AESGCM(_kdf(salt, n).derive(passphrase.encode())).decrypt(
            nonce, sealed, KEYS_FORMAT.encode()
        )
    except InvalidTag:
        raise BackupError("wrong passphrase for the key file (or the file is damaged)") from None
    keys: dict[str, str] = json.loads(plain)
    return keys


def current_keys(settings: Settings) -> dict[str, str]:
    from portal.evidence.service import log_key

    log_key(settings)  # creates var/log_signing_key when the instance has none yet
    seed = settings.log_signing_key or (
        (settings.var_dir / "log_signing_key").read_text(encoding="ascii").strip()
    )
    return {
        "secret_key": settings.secret_key,
        "data_key": settings.data_key,
        "blob_master_keys": settings.blob_master_keys,
        "log_signing_key": seed,
    }


def fingerprint(keys: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


# -- files ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _storage_files(root: Path) -> Iterator[Path]:
    """Every file under the storage root except unfinished uploads (``tmp/``)."""
    if not root.exists():
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == "tmp" or not path.is_file():
            continue
        yield path


def _pg_url(database_url: str) -> str:
    """libpq's form of the SQLAlchemy URL (no driver name)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _inspect(settings: Settings, look: Callable[[Any], Any]) -> Any:
    """``look(connection)`` on a synchronous view of the configured database."""
    from portal.db import create_engine

    async def work() -> Any:
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(look)
        finally:
            await engine.dispose()

    return asyncio.run(work())


def _revision(settings: Settings) -> str | None:
    def look(conn: Any) -> str | None:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return None if row is None else str(row[0])

    result: str | None = _inspect(settings, look)
    return result


def _run(command: list[str], what: str) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise BackupError(f"{command[0]} is needed for {what} (apt-get install postgresql-client)")
    done = subprocess.run(  # noqa: S603 - a fixed tool, arguments from our settings
        [tool, *command[1:]], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {done.stderr.strip()[-2000:]}")


# -- backup -----------------------------------------------------------------------------------


def create_backup(
    settings: Settings,
    dest: Path,
    keys_path: Path,
    passphrase: str,
    progress: Progress | None = None,
) -> BackupResult:
    """Write the backup folder ``dest`` (which must not exist) and the sealed keys."""
    dest, keys_path = dest.resolve(), keys_path.resolve()
    if dest.exists():
        raise BackupError(f"{dest} exists already: name a new folder")
    if keys_path.exists():
        raise BackupError(f"{keys_path} exists already: name a new file")
    if keys_path.is_relative_to(dest):
        raise BackupError("keep the key file outside the backup folder")
    keys = current_keys(settings)
    sealed = seal_keys(keys, passphrase)
    revision = _revision(settings)
    if revision is None:
        raise BackupError("the database has no schema yet: nothing to back up")
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        if settings.is_sqlite:
            database = "sqlite"
            source = sqlite3.connect(_sqlite_path(settings.database_url))
            target = sqlite3.connect(partial / SQLITE_FILE)
            try:
                with target:
                    source.backup(
                        target,
                        pages=4096,
                        progress=(
                            None
                            if progress is None
                            else lambda _s, left, total: progress("database", total - left, total)
                        ),
                    )
                # One self-contained file: no -wal or -shm beside it when it is read.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
                source.close()
        else:
            database = "postgresql"
            if progress:
                progress("database", 0, 1)
            _run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    "--no-acl",
                    "--file",
                    str(partial / PG_FILE),
                    _pg_url(settings.database_url),
                ],
                "pg_dump",
            )
            if progress:
                progress("database", 1, 1)
        # Files after the database: every blob the snapshot names was written before it.
        storage = list(_storage_files(settings.storage_dir))
        for n, path in enumerate(storage, 1):
            target_path = partial / "storage" / path.relative_to(settings.storage_dir)
            target_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target_path)
            if progress:
                progress("files", n, len(storage))
        files: dict[str, dict[str, Any]] = {}
        total = 0
        for path in sorted(p for p in partial.rglob("*") if p.is_file()):
            size = path.stat().st_size
            files[path.relative_to(partial).as_posix()] = {"size": size, "sha256": _sha256(path)}
            total += size
        manifest = {
            "format": FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": database,
            "revision": revision,
            "log_origin": settings.log_name,
            "keys_fingerprint": fingerprint(keys),
            "files": files,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        keys_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(keys_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(sealed)
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BackupResult(dest, keys_path, database, revision, len(files), total)


# -- restore ----------------------------------------------------------------------------------


def read_manifest(source: Path, progress: Progress | None = None) -> dict[str, Any]:
    """The manifest, after checking that every file it lists is there, whole and unchanged,
    and that nothing else is."""
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} has no readable {MANIFEST}: not a Jiefen backup") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source} is not a backup this version reads ({FORMAT})")
    files: dict[str, dict[str, Any]] = manifest["files"]
    present = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()} - {
        MANIFEST
    }
    if missing := sorted(set(files) - present):
        raise BackupError(f"the backup is incomplete: {len(missing)} files missing ({missing[0]})")
    if extra := sorted(present - set(files)):
        raise BackupError(f"the backup holds files its manifest does not list ({extra[0]})")
    for n, (name, expected) in enumerate(sorted(files.items()), 1):
        path = source / name
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            raise BackupError(f"the backup is damaged: {name} differs from its manifest")
        if progress:
            progress("check", n, len(files))
    return manifest


def _database_is_empty(settings: Settings) -> bool:
    if settings.is_sqlite:
        path = _sqlite_path(settings.database_url)
        if not path.exists() or path.stat().st_size == 0:
            return True
    return not _inspect(settings, lambda conn: inspect(conn).get_table_names())


def check_environment_keys(keys: dict[str, str], env: dict[str, str]) -> None:
    """Keys set in the environment win over ``VAR_DIR``'s files: they must be the backup's."""
    for name, env_name in ENV_NAMES.items():
        value = env.get(env_name)
        if value and value != keys[name]:
            raise BackupError(
                f"{env_name} is set in the environment to another value than the backup's: "
                "unset it (restore writes the backup's keys into VAR_DIR) or set it to the "
                "backup's"
            )


def restore_backup(
    env: dict[str, str],
    source: Path,
    keys_path: Path,
    passphrase: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Restore into the empty instance that ``env`` configures. Returns the manifest. Checks
    everything it can before it writes anything."""
    source = source.resolve()
    manifest = read_manifest(source, progress)
    try:
        sealed = keys_path.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the key file {keys_path}: {exc.strerror}") from None
    keys = open_keys(sealed, passphrase)
    if fingerprint(keys) != manifest["keys_fingerprint"]:
        raise BackupError("this key file belongs to another backup")
    check_environment_keys(keys, env)

    var_dir = Path(env.get("VAR_DIR", "var"))
    written = [var_dir / KEY_FILES[name] for name in KEY_FILES if not env.get(ENV_NAMES[name])]
    # Settings would make fresh keys for an empty VAR_DIR; read the target's places without it.
    settings = Settings.from_env({**env, **{ENV_NAMES[k]: v for k, v in keys.items() if v}})
    database = "sqlite" if settings.is_sqlite else "postgresql"
    if database != manifest["database"]:
        raise BackupError(
            f"the backup is of a {manifest['database']} database and DATABASE_URL names a "
            f"{database} one"
        )
    if not _database_is_empty(settings):
        raise BackupError("the target database is not empty: restore only into a new instance")
    if any(_storage_files(settings.storage_dir)):
        raise BackupError(f"{settings.storage_dir} is not empty: restore only into a new instance")

    # The keys first: the instance reads them from VAR_DIR from now on.
    var_dir.mkdir(parents=True, exist_ok=True)
    for name, file in KEY_FILES.items():
        path = var_dir / file
        if path not in written:
            continue
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(keys[name] + "\n")
    if progress:
        progress("database", 0, 1)
    if database == "sqlite":
        target_path = _sqlite_path(settings.database_url)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(target_path) + suffix).unlink(missing_ok=True)
        backup = sqlite3.connect(f"file:{source / SQLITE_FILE}?mode=ro&immutable=1", uri=True)
        target = sqlite3.connect(target_path)
        try:
            with target:
                backup.backup(target)
        finally:
            target.close()
            backup.close()
    else:
        _run(
            [
                "pg_restore",
                "--no-owner",
                "--no-acl",
                "--exit-on-error",
                "--single-transaction",
                "--dbname",
                _pg_url(settings.database_url),
                str(source / PG_FILE),
            ],
            "pg_restore",
        )
    if progress:
        progress("database", 1, 1)
    stored = sorted(n for n in manifest["files"] if n.startswith("storage/"))
    for n, name in enumerate(stored, 1):
        target_file = settings.storage_dir / name.removeprefix("storage/")
        target_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target_file)
        if progress:
            progress("files", n, len(stored))
    return manifest
