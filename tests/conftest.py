"""Test fixtures: real SQLite and PostgreSQL, the real app, real servers on loopback.

Database tests run once per backend through the parametrised ``db_url`` fixture. PostgreSQL
gets a fresh database per test run, created in the server at ``TEST_POSTGRES_URL`` and dropped
at the end. Outside CI, tests whose service (PostgreSQL, Redis, Chromium) is absent are skipped
with the reason; under ``CI=true`` they fail instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.engine import make_url

from portal.app import create_app
from portal.cli import upgrade_database
from portal.db import Base, create_engine, import_models
from portal.settings import Settings

import_models()

CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Parallel test workers (pytest-xdist) share the Redis server: each names its own channels.
REDIS_PREFIX = f"jiefen-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "var" / "artifacts"


def require_service(name: str, reason: str) -> None:
    """Skip outside CI, fail in CI: a service-backed test may never silently not run there."""
    message = f"{name} unavailable: {reason}"
    if CI:
        pytest.fail(message + " (required under CI=true)")
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def postgres_available() -> bool:
    url = make_url(POSTGRES_URL)
    return _port_open(url.host or "127.0.0.1", url.port or 5432)


def redis_available() -> bool:
    return _port_open("127.0.0.1", 6379)


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


async def _admin_sql(statement: str) -> None:
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def create_postgres_database() -> str:
    """Create an empty database for this run and return its URL."""
    name = f"jiefen_test_{secrets.token_hex(4)}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(database_url: str, var_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": "test-secret-key-" + "x" * 32,
        "data_key": "test-data-key-" + "y" * 32,
        "var_dir": var_dir,
        "storage_dir": var_dir / "storage",
        "base_url": "http://testserver",
        "redis_prefix": REDIS_PREFIX,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database on each backend, shared by the tests of a run."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "jiefen.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade_database(make_settings(url, path.parent))
        yield url
        return
    if not postgres_available():
        require_service("PostgreSQL", f"nothing listens at {make_url(POSTGRES_URL).host}")
    url = create_postgres_database()
    try:
        upgrade_database(make_settings(url, tmp_path_factory.mktemp("pgvar")))
        yield url
    finally:
        drop_postgres_database(url)


async def truncate_all(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            tables = list(reversed(Base.metadata.sorted_tables))
            if conn.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in tables)
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    await conn.execute(table.delete())
                # Deleting the cases made the triggers append to the dashboard's totals.
                for name in ("case_rollup_delta", "case_rollup"):
                    await conn.execute(Base.metadata.tables[name].delete())
    finally:
        await engine.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application
    await truncate_all(settings.database_url)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


_CSRF_RE = re.compile(r'name="csrf-token" content="([0-9a-f]+)"')


async def csrf_token(client: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token a page gives this browser (and its cookie, kept by the client)."""
    response = await client.get(path)
    found = _CSRF_RE.search(response.text)
    assert found, f"no CSRF token on {path} ({response.status_code})"
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, path: str, data: dict[str, Any] | None = None, **kwargs: Any
) -> httpx.Response:
    token = await csrf_token(client)
    return await client.post(path, data={"csrf_token": token, **(data or {})}, **kwargs)


async def log_in(client: httpx.AsyncClient, login: str, password: str) -> httpx.Response:
    response = await post_form(client, "/accounts/login", {"login": login, "password": password})
    assert response.status_code == 303, response.text
    return response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
