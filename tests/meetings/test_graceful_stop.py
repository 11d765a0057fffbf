"""A graceful stop (SIGTERM) in the middle of a session: two server processes share the session
through Redis; the one the claimant is on stops. The claimant is told, reconnects to the other
process, joins again and has every message, including those said while switching."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from portal.app import create_app
from portal.meetings.models import MeetingMessage
from portal.server import RESTARTING, JiefenServer
from tests.conftest import (
    REDIS_URL,
    free_port,
    make_settings,
    redis_available,
    require_service,
    truncate_all,
)
from tests.meetings.conftest import Crowd, Peer
from tests.meetings.test_sockets import chats
from tests.realtime.test_socket_auth import Live, session_cookie


@contextlib.asynccontextmanager
async def jiefen_server(db_url: str, var_dir: Path) -> AsyncIterator[tuple[Live, Any]]:
    """A portal served by `jiefen serve`'s own server class (portal.server), in this process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(db_url, var_dir, base_url=url, redis_url=REDIS_URL))
    server = JiefenServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"
        ),
        drain_seconds=3.0,
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield Live(url=url, app=app), (server, task)
    finally:
        server.should_exit = True
        await task


async def _hear_each_other(
    first: Live, second: Live, a: Peer, b: Peer, ids: tuple[int, int]
) -> None:
    for origin, target, user_id in ((first, b, ids[1]), (second, a, ids[0])):
        sio = origin.app.starlette.state.sio
        for _ in range(100):
            await sio.emit("probe", {}, room=f"user:{user_id}")
            await asyncio.sleep(0.05)
            if target.received("probe"):
                break
        else:
            pytest.fail("Redis never carried a message between the servers")


async def test_sigterm_tells_clients_who_reconnect_elsewhere_and_lose_nothing(
    db_url: str, tmp_path: Path
) -> None:
    if not redis_available():
        require_service("Redis", "nothing listens at 127.0.0.1:6379")
    from tests.meetings.conftest import build_cast

    async with (
        jiefen_server(db_url, tmp_path / "a") as (first, (first_server, first_task)),
        jiefen_server(db_url, tmp_path / "b") as (second, _),
    ):
        cast = await build_cast(first.app)
        mid = cast.meeting_id
        on_first, on_second = Crowd(first), Crowd(second)
        try:
            c = await on_first.peer("claimant", cast.claimant)
            m = await on_second.peer("mediator", cast.mediator)
            await _hear_each_other(first, second, c, m, (cast.claimant.id, cast.mediator.id))
            assert (await m.act("meeting.join", mid))["ok"]
            assert (await c.act("meeting.join", mid))["ok"]
            await m.until(lambda p: any(s["state"] == "waiting" for s in p.last_state()["seats"]))
            assert (await m.act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
            await c.until_state(state="admitted", room="joint")
            assert (await c.act("meeting.chat", mid, client_id="c-1", text="停机之前"))["ok"]
            await m.until(lambda p: "停机之前" in chats(p).values())
            watermark = (await c.act("meeting.sync", mid, after_seq=0))["upto"]

            # SIGTERM's path: uvicorn's handle_exit sets should_exit.
            first_server.should_exit = True
            await c.until(lambda p: bool(p.received(RESTARTING)), seconds=5)
            assert c.received(RESTARTING)[0]["retry_ms"] > 0
            # The first process no longer takes connections.
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", int(first.url.rsplit(":", 1)[1]))

            # While the claimant moves, the mediator goes on talking.
            for k in range(3):
                said = await m.act("meeting.chat", mid, client_id=f"m-{k}", text=f"切换中{k}")
                assert said["ok"]
            await c.close()
            # As the browser does (static/js/meeting.js): reconnect (the load balancer sends
            # it to a process still up), join again, sync from what it had.
            cookie = await session_cookie(second, cast.claimant.login, cast.claimant.password)
            again = await Peer("claimant again", second.url, cookie).connect()
            on_second.peers.append(again)
            joined = await again.act("meeting.join", mid)
            assert joined["ok"] and joined["state"]["you"]["room"] == "joint"
            synced = await again.act("meeting.sync", mid, after_seq=watermark)
            assert not synced["more"]
            got = chats(c) | chats(again)
            assert [got[seq] for seq in sorted(got)][-4:] == [
                "停机之前",
                "切换中0",
                "切换中1",
                "切换中2",
            ]
            assert (await again.act("meeting.chat", mid, client_id="c-2", text="回来了"))["ok"]
            await m.until(lambda p: "回来了" in chats(p).values())
            await asyncio.wait_for(first_task, timeout=15)  # the first process ended
            async with second.app.starlette.state.db() as db:
                stored = list(
                    await db.scalars(
                        select(MeetingMessage.body)
                        .where(MeetingMessage.meeting_id == mid)
                        .order_by(MeetingMessage.seq)
                    )
                )
            assert stored[-5:] == ["停机之前", "切换中0", "切换中1", "切换中2", "回来了"]
        finally:
            await on_first.close()
            await on_second.close()
    await truncate_all(db_url)
