"""The Socket.IO server: authenticated from the same session cookie as the pages.

The portal hands in ``authenticate`` (cookie header -> who, or None), so this module depends on
no feature. Anonymous sockets are refused at ``connect``. Every authenticated socket joins its
user's room ``user:<id>``, which services address after their transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from realtime.events import Welcome

log = logging.getLogger("jiefen.realtime")

Authenticate = Callable[[str], Awaitable[Welcome | None]]


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


class PortalNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, authenticate: Authenticate) -> None:
        super().__init__("/")
        self._authenticate = authenticate

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        who = await self._authenticate(environ.get("HTTP_COOKIE", ""))
        if who is None:
            log.info("socket refused: not authenticated")
            raise socketio.exceptions.ConnectionRefusedError("authentication required")
        await self.save_session(sid, {"user_id": who.user_id, "role": who.role})
        await self.enter_room(sid, user_room(who.user_id))
        await self.emit(Welcome.EVENT, who.payload(), to=sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        log.debug("socket %s disconnected: %s", sid, reason)


def create_socket_server(
    authenticate: Authenticate, *, redis_url: str | None, allowed_origins: list[str]
) -> socketio.AsyncServer:
    """Several processes share rooms through Redis when ``redis_url`` is set."""
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=allowed_origins,
        max_http_buffer_size=64 * 1024,
        logger=False,
        engineio_logger=False,
    )
    sio.register_namespace(PortalNamespace(authenticate))
    return sio


async def close_socket_server(sio: socketio.AsyncServer) -> None:
    """Stop background tasks and close the Redis connections (python-socketio has no hook)."""
    await sio.shutdown()
    manager = sio.manager
    listener = getattr(manager, "thread", None)
    if isinstance(listener, asyncio.Task):
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    for name in ("pubsub", "redis"):
        connection = getattr(manager, name, None)
        if connection is not None:
            await connection.aclose()
