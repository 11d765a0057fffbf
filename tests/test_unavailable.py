"""A database that is away answers 503 with Retry-After, in the user's language, and the portal
recovers by itself when it is back.

PostgreSQL is reached through a TCP relay on loopback that the test cuts (every open connection
reset, new ones refused) and restores on the same port, as a restart or failover looks to the
portal. SQLite's counterpart is its write lock held by another process past the busy timeout.
Pages and the API both say "try again" instead of crashing; the log gets one warning line, not a
stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from portal.app import create_app
from portal.db import create_engine, unavailable
from portal.pages import RETRY_AFTER_SECONDS
from portal.policy import Role
from tests.api.test_api import bearer, token_for
from tests.conftest import free_port, log_in, post_form, truncate_all
from tests.factories import PASSWORD, make_firm, make_user


class Relay:
    """A TCP relay to PostgreSQL that can be cut and restored on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()  # a reset, as when the database goes away
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None


async def test_postgresql_outage_answers_503_and_recovers(
    db_url: str, tmp_path: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if db_url.startswith("sqlite"):
        await _sqlite_held_by_another_process(db_url, settings)
        return

    url = make_url(db_url)
    relay = Relay(url.port or 5432)
    await relay.start()
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    app = create_app(replace(settings, database_url=relayed))
    lifespan = LifespanManager(app)
    await lifespan.__aenter__()
    try:
        await make_user(app, Role.CONSUMER, phone="13900000501", name="李四")
        rep = await make_user(app, Role.FIRM_REP, firm=await make_firm(app))
        secret = await token_for(app, rep)
        async with _client(app) as client:
            await log_in(client, "13900000501", PASSWORD)
            assert (await client.get("/cases")).status_code == 200
            assert (await client.get("/api/v1/cases", headers=bearer(secret))).status_code == 200

            await relay.cut()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="jiefen.errors"):
                _assert_unavailable(await client.get("/cases"))
                # The API says the same as problem details, in the caller's language.
                answer = await client.get(
                    "/api/v1/cases", headers=bearer(secret, **{"Accept-Language": "zh-CN"})
                )
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
                assert answer.headers["content-type"].startswith("application/problem+json")
                assert "数据库暂时不可用" in answer.json()["detail"]
            said = [r for r in caplog.records if r.name == "jiefen.errors"]
            assert said and all("database unavailable" in r.getMessage() for r in said)
            assert all(r.exc_info is None and r.levelno == logging.WARNING for r in said)

            # Back on the same port: the portal finds it again without a restart. The pool's
            # connections died with the cut, so allow a failed first try per pooled connection.
            await relay.start()
            statuses = [(await client.get("/cases")).status_code for _ in range(4)]
            assert statuses[-1] == 200, statuses
            assert set(statuses) <= {200, 503}, statuses
            api = await client.get("/api/v1/cases", headers=bearer(secret))
            assert api.status_code == 200, api.text
    finally:
        if relay.server is None:
            await relay.start()  # let the lifespan's loops finish against a live database
        await lifespan.__aexit__(None, None, None)
        await relay.cut()
        await truncate_all(db_url)


async def _sqlite_held_by_another_process(db_url: str, settings: Any) -> None:
    """SQLite's outage: another process (a long backup, a VACUUM) holds the write lock past the
    busy timeout (10 s). A login, which writes, answers 503; once the lock goes, it works."""
    app = create_app(settings)
    async with LifespanManager(app), _client(app) as client:
        try:
            await make_user(app, Role.CONSUMER, phone="13900000502")
            holder = sqlite3.connect(
                make_url(db_url).database or "",
                isolation_level=None,
                timeout=30,
                check_same_thread=False,
            )
            try:
                # From a thread: the portal's own loops, on this event loop, may hold the lock
                # for a moment and must be able to finish while the holder waits for it.
                await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
                answer = await post_form(
                    client, "/accounts/login", {"login": "13900000502", "password": PASSWORD}
                )
                _assert_unavailable(answer)
            finally:
                if holder.in_transaction:
                    holder.execute("ROLLBACK")
                holder.close()
            await log_in(client, "13900000502", PASSWORD)
        finally:
            await truncate_all(db_url)


def _assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert "服务暂时不可用" in answer.text and "请一分钟后再试" in answer.text
    assert 'data-testid="request-id"' in answer.text
    assert "Traceback" not in answer.text


def _client(app: Any) -> httpx.AsyncClient:
    # Exceptions the app lets out are raised here: an outage must be answered, not raised on
    # (Starlette's error middleware re-raises for the server to log a stack trace each time).
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_what_counts_as_unavailable(tmp_path: Path) -> None:
    """Real errors from real databases: a lock or a refused connection is, a missing table not."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")  # as the portal keeps it
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
    try:
        async with engine.connect() as conn:
            # The portal's pragmas set a busy timeout; set it back to none for this check.
            await conn.execute(text("PRAGMA busy_timeout=0"))
            with pytest.raises(sa_exc.OperationalError) as locked:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
            assert unavailable(locked.value)
            with pytest.raises(sa_exc.OperationalError) as missing:
                await conn.execute(text("SELECT * FROM no_such_table"))
            assert not unavailable(missing.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await engine.dispose()

    refused = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    try:
        with pytest.raises((OSError, sa_exc.DBAPIError)) as down:
            async with refused.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert unavailable(down.value), repr(down.value)
    finally:
        await refused.dispose()
    assert not unavailable(ValueError("a bug"))
    # A refused connection to something else (Redis, a webhook receiver) is not the database.
    with pytest.raises(ConnectionRefusedError) as elsewhere:
        await asyncio.open_connection("127.0.0.1", free_port())
    assert not unavailable(elsewhere.value)


async def test_a_session_event_while_the_database_is_away_says_so(app: Any) -> None:
    """Live sessions: an event the database could not take is refused as "unavailable" in the
    user's language (meeting.js keeps a chat message and sends it again); a bug stays "error"."""
    sockets = app.starlette.state.meeting_sockets
    refused = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")

    async def database_away(sid: str, data: Any) -> dict[str, Any]:
        async with refused.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {"ok": True}

    async def bug(sid: str, data: Any) -> dict[str, Any]:
        raise ZeroDivisionError

    try:
        ack = await sockets._guarded("meeting.chat", database_away)("no-such-socket", {})
    finally:
        await refused.dispose()
    assert ack["ok"] is False and ack["error"] == "unavailable"
    assert "服务暂时不可用" in ack["message"] and "自动重新发送" in ack["message"]
    ack = await sockets._guarded("meeting.chat", bug)("no-such-socket", {})
    assert ack == {"ok": False, "error": "error", "message": "出了点问题，请重试。"}
