"""Live events sent after commit (Zulip's ``send_event_on_commit``).

A service queues what the real-time server should do, in order, with :func:`on_commit`: emit a
typed event to a named room, put a socket into a room or take it out, close a room. Nothing is
sent unless the transaction commits: a rollback drops the queue. After the session is done, the
caller hands :func:`committed` to :func:`publish` (``portal.web.db_session`` does it for pages,
``realtime`` for socket handlers). Services never import socketio; this module does not either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

PENDING = "jiefen.live_pending"
READY = "jiefen.live_ready"


class LiveEvent(Protocol):
    """A typed event of ``realtime.events``: its name and its JSON payload."""

    @property
    def EVENT(self) -> str: ...  # the events' class constant

    def payload(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Emit:
    room: str
    event: LiveEvent
    skip_sid: str | None = None


@dataclass(frozen=True)
class Enter:
    sid: str
    room: str


@dataclass(frozen=True)
class Leave:
    sid: str
    room: str


@dataclass(frozen=True)
class CloseRoom:
    room: str


Op = Emit | Enter | Leave | CloseRoom


def _promote(session: Session) -> None:
    pending = session.info.pop(PENDING, [])
    if pending:
        session.info.setdefault(READY, []).extend(pending)


def _discard(session: Session) -> None:
    session.info.pop(PENDING, None)


# Once for every session: moving the queue costs nothing when a session queued nothing.
event.listen(Session, "after_commit", _promote)
event.listen(Session, "after_soft_rollback", lambda s, _t: _discard(s))


def on_commit(db: AsyncSession, *ops: Op) -> None:
    """Queue ``ops`` to be published once the current transaction commits."""
    db.info.setdefault(PENDING, []).extend(ops)


def committed(db: AsyncSession) -> list[Op]:
    """The operations of transactions that committed, in order; the queue is emptied."""
    ready: list[Op] = db.info.pop(READY, [])
    return ready


async def publish(sio: Any, ops: Sequence[Op]) -> None:
    """Carry out ``ops`` on the Socket.IO server (rooms are shared across processes by its
    manager: Redis when configured)."""
    for op in ops:
        if isinstance(op, Emit):
            await sio.emit(op.event.EVENT, op.event.payload(), room=op.room, skip_sid=op.skip_sid)
        elif isinstance(op, Enter):
            await sio.enter_room(op.sid, op.room)
        elif isinstance(op, Leave):
            await sio.leave_room(op.sid, op.room)
        else:
            await sio.close_room(op.room)
