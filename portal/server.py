"""Serving with a graceful stop: ``jiefen serve``'s uvicorn server.

On SIGTERM (or ``should_exit``) uvicorn stops accepting, closes every open connection
(WebSockets with code 1012, "service restart"), waits for requests in flight, then runs the
application's shutdown. This server first tells this process's Socket.IO clients that it is
going (``server.restarting``), once it has stopped accepting, so that they reconnect, through
the load balancer, to another process, and gives them ``drain_seconds`` to go. Those still
connected are then closed by uvicorn; the portal's shutdown (``portal.app``) seals the
recordings this process was making, closes their peers and sends what the outbox holds.

Nothing of a session lives only in a process: the chat is in the database, so a client that
reconnects elsewhere joins again and syncs what was said meanwhile (``meeting.sync``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import uvicorn

logger = logging.getLogger("jiefen.server")
RESTARTING = "server.restarting"


def find_drain(app: Any) -> Any:
    """The application's ``jiefen_drain`` hook, through uvicorn's middleware wrappers."""
    for _ in range(10):
        hook = getattr(app, "jiefen_drain", None)
        if hook is not None:
            return hook
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class JiefenServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float = 3.0) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new connection reaches this process any more
            server.close()
        drain = find_drain(getattr(self.config, "loaded_app", None))
        if drain is not None and not self.force_exit:
            started = time.monotonic()
            try:
                left = await drain(self.drain_seconds)
            except Exception:
                logger.exception("draining the socket clients failed")
            else:
                logger.info(
                    "stopping: told the socket clients to reconnect elsewhere; %d still here "
                    "after %.1f s",
                    left,
                    time.monotonic() - started,
                )
        await super().shutdown(sockets)


def run(config: uvicorn.Config) -> None:
    """uvicorn.run() with :class:`JiefenServer` for one worker. Several workers in one
    service (``--workers``) stop together, so their clients have nowhere to go: run one
    worker per service instance and restart them one at a time (docs/deploy.md)."""
    if config.workers > 1 or config.should_reload:
        uvicorn.run(
            config.app,
            **{
                k: getattr(config, k)
                for k in (
                    "factory",
                    "host",
                    "port",
                    "workers",
                    "reload",
                    "proxy_headers",
                    "ws",
                    "access_log",
                )
            },
        )
        return
    JiefenServer(config).run()


async def drain_sockets(sio: Any, seconds: float) -> int:
    """Tell this process's clients (not other processes': ``ignore_queue``) to reconnect
    elsewhere and wait up to ``seconds`` for them to go. Returns how many stayed."""
    await sio.emit(RESTARTING, {"retry_ms": 500}, ignore_queue=True)
    deadline = asyncio.get_running_loop().time() + seconds
    while sio.eio.sockets and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # (engine.io has no "all gone" event to wait on)
    return len(sio.eio.sockets)
