"""The Socket.IO endpoint, served by a real uvicorn on loopback, with real clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
import uvicorn

from portal.app import create_app
from portal.policy import Role
from tests.conftest import (
    REDIS_URL,
    free_port,
    log_in,
    make_settings,
    redis_available,
    require_service,
    truncate_all,
)
from tests.factories import make_user


@dataclass
class Live:
    url: str
    app: Any


@contextlib.asynccontextmanager
async def serve(db_url: str, var_dir: Path, **overrides: Any) -> AsyncIterator[Live]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(db_url, var_dir, base_url=url, **overrides))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield Live(url=url, app=app)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server
    await truncate_all(db_url)


@contextlib.asynccontextmanager
async def sio_client() -> AsyncIterator[socketio.AsyncClient]:
    """A Socket.IO client whose HTTP session is closed even when the connection is refused."""
    async with aiohttp.ClientSession() as http:
        client = socketio.AsyncClient(reconnection=False, http_session=http)
        try:
            yield client
        finally:
            if client.connected:
                await client.disconnect()


async def session_cookie(live: Live, login: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=live.url) as http:
        await log_in(http, login, password)
        return f"jiefen_session={http.cookies['jiefen_session']}"


async def test_anonymous_socket_is_refused(live: Live) -> None:
    async with sio_client() as client:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(live.url, transports=["websocket"], wait_timeout=5)
    async with sio_client() as forged:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await forged.connect(
                live.url,
                transports=["websocket"],
                wait_timeout=5,
                headers={"Cookie": "jiefen_session=forged.token"},
            )


async def test_socket_authenticated_by_the_page_cookie(live: Live) -> None:
    person = await make_user(live.app, Role.MEDIATOR, name="李调解员")
    cookie = await session_cookie(live, person.login, person.password)
    welcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    async with sio_client() as client:
        client.on("welcome", lambda data: welcome.set_result(data))
        await client.connect(
            live.url, transports=["websocket"], headers={"Cookie": cookie}, wait_timeout=5
        )
        data = await asyncio.wait_for(welcome, 5)
        assert data == {"user_id": person.id, "role": "mediator", "display_name": "李调解员"}
    # After logout the same cookie no longer opens a socket.
    async with httpx.AsyncClient(base_url=live.url) as http:
        http.cookies.set("jiefen_session", cookie.split("=", 1)[1])
        page = await http.get("/")
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        await http.post("/accounts/logout", data={"csrf_token": token})
    async with sio_client() as again:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(
                live.url, transports=["websocket"], headers={"Cookie": cookie}, wait_timeout=5
            )


async def test_cross_site_origin_is_refused(live: Live) -> None:
    person = await make_user(live.app, Role.CONSUMER)
    cookie = await session_cookie(live, person.login, person.password)
    async with sio_client() as client:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                live.url,
                transports=["websocket"],
                wait_timeout=5,
                headers={"Cookie": cookie, "Origin": "https://evil.example"},
            )


async def test_two_processes_share_rooms_through_redis(db_url: str, tmp_path: Path) -> None:
    """A message emitted by one server reaches a socket connected to another, via Redis."""
    if not redis_available():
        require_service("Redis", "nothing listens at 127.0.0.1:6379")
    async with (
        serve(db_url, tmp_path / "a", redis_url=REDIS_URL) as first,
        serve(db_url, tmp_path / "b", redis_url=REDIS_URL) as second,
    ):
        person = await make_user(first.app, Role.CONSUMER)
        cookie = await session_cookie(first, person.login, person.password)
        got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        async with sio_client() as client:
            client.on("notice", lambda data: got.done() or got.set_result(data))
            await client.connect(
                first.url, transports=["websocket"], headers={"Cookie": cookie}, wait_timeout=5
            )
            sio = second.app.starlette.state.sio
            assert type(sio.manager).__name__ == "AsyncRedisManager"
            # The first server subscribes to Redis when its first socket connects; retry until then.
            for _ in range(50):
                await sio.emit("notice", {"text": "你好"}, room=f"user:{person.id}")
                try:
                    data = await asyncio.wait_for(asyncio.shield(got), 0.2)
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail("the message never crossed Redis")
            assert data == {"text": "你好"}
    await truncate_all(db_url)
