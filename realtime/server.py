"""The Socket.IO server: authenticated from the same session cookie as the pages.

The portal hands in ``authenticate`` (cookie header -> who, or None) and the features that
handle events (``SocketFeature``: live mediation sessions, ``realtime.meetings``), so this module
depends on no feature. Anonymous sockets are refused at ``connect``. Every authenticated socket
joins its user's room ``user:<id>``, which services address after their transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import socketio

from realtime.events import Welcome

log = logging.getLogger("jiefen.realtime")

Authenticate = Callable[[str], Awaitable[Welcome | None]]
# An event handler: (sid, the event's one argument) -> the acknowledgement.
EventHandler = Callable[[str, Any], Awaitable[Any]]


class SocketFeature(Protocol):
    """A feature's real-time events, handed to the namespace by the portal."""

    def bind(self, sio: socketio.AsyncServer) -> None: ...

    def handlers(self) -> Mapping[str, EventHandler]: ...

    async def disconnected(self, sid: str) -> None: ...


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


class PortalNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, authenticate: Authenticate, features: Sequence[SocketFeature] = ()) -> None:
        super().__init__("/")
        self._authenticate = authenticate
        self._features = list(features)
        self._handlers: dict[str, EventHandler] = {}
        for feature in self._features:
            for event, handler in feature.handlers().items():
                if event in self._handlers or event in ("connect", "disconnect"):
                    raise ValueError(f"two handlers for the socket event {event!r}")
                self._handlers[event] = handler

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect") and self.server.manager.is_connected(
            args[0], self.namespace
        ):
            # Sent by a connected client as an ordinary event, not the server's own.
            log.warning("socket %s sent a reserved event %r: ignored", args[0], event)
            return None
        handler = self._handlers.get(event)
        if handler is None:
            return await super().trigger_event(event, *args)
        sid, *data = args
        # An event carries one argument (an object); anything else is the handler's to refuse.
        return await handler(sid, data[0] if len(data) == 1 else None)

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
        for feature in self._features:
            try:
                await feature.disconnected(sid)
            except Exception:
                log.exception("socket %s: disconnect handling failed", sid)


def create_socket_server(
    authenticate: Authenticate,
    *,
    redis_url: str | None,
    redis_prefix: str = "jiefen",
    allowed_origins: list[str],
    features: Sequence[SocketFeature] = (),
) -> socketio.AsyncServer:
    """Several processes share rooms through Redis when ``redis_url`` is set."""
    manager = (
        socketio.AsyncRedisManager(redis_url, channel=f"{redis_prefix}:socketio")
        if redis_url
        else None
    )
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=allowed_origins,
        max_http_buffer_size=64 * 1024,
        logger=False,
        engineio_logger=False,
    )
    sio.register_namespace(PortalNamespace(authenticate, features))
    for feature in features:
        feature.bind(sio)
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
