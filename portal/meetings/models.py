"""Live mediation sessions: the session, its participants, its chat and who is connected.

A session ("meeting" in code, so as not to be confused with database and login sessions) is
scheduled by the case's mediator for a time, a length and a mode. Each participant has a side
(claimant, respondent, mediator, observer), a state (invited → waiting → admitted, or turned
away, or removed) and, once admitted, the room they are in. Chat messages carry a per-session
sequence number (allocated by incrementing ``meetings.last_seq`` under its row lock) and the
sender's own message id, so a retried message is stored once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class Mode(StrEnum):
    VIDEO = "video"
    VOICE = "voice"
    TEXT = "text"


class MeetingStatus(StrEnum):
    SCHEDULED = "scheduled"
    OPEN = "open"
    ENDED = "ended"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    ADJOURNED = "adjourned"
    SETTLED = "settled"
    FAILED = "failed"


class Side(StrEnum):
    CLAIMANT = "claimant"
    RESPONDENT = "respondent"
    MEDIATOR = "mediator"
    OBSERVER = "observer"


class SeatState(StrEnum):
    INVITED = "invited"
    WAITING = "waiting"
    ADMITTED = "admitted"
    REMOVED = "removed"
    TURNED_AWAY = "turned_away"


class Room(StrEnum):
    JOINT = "joint"
    CAUCUS_CLAIMANT = "caucus_claimant"
    CAUCUS_RESPONDENT = "caucus_respondent"
    NOTES = "notes"  # the mediator's own notes: a chat channel, never a place anyone is in


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Meeting(Base):
    """One scheduled live session of a case."""

    __tablename__ = "meetings"
    __table_args__ = (
        CheckConstraint(_one_of("mode", Mode), name="mode_known"),
        CheckConstraint(_one_of("status", MeetingStatus), name="status_known"),
        CheckConstraint(f"outcome IS NULL OR {_one_of('outcome', Outcome)}", name="outcome_known"),
        CheckConstraint("duration_minutes BETWEEN 5 AND 480", name="duration_sensible"),
        Index("ix_meetings_case_id_starts_at", "case_id", "starts_at"),
        # The reminder loop looks for sessions starting in the next 24 hours.
        Index("ix_meetings_status_starts_at", "status", "starts_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    mediator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    starts_at: Mapped[datetime] = mapped_column()
    duration_minutes: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default=MeetingStatus.SCHEDULED.value)
    outcome: Mapped[str | None] = mapped_column(String(10))
    # Locked: nobody new may knock; people already waiting may still be admitted.
    locked: Mapped[bool] = mapped_column(default=False)
    # The last chat sequence number given out (the counter row is this one).
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by every change of who is where: clients drop a state older than one they have.
    version: Mapped[int] = mapped_column(Integer, default=0)
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    # When the current time was set (scheduled, or last moved): a reminder is only sent if the
    # session was planned at least that long ahead (no "in 24 hours" for a session set for today).
    planned_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The iCalendar SEQUENCE of its calendar entry: one more for every move (a cancellation is
    # sent as one more again; see portal.meetings.calendar).
    calendar_sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the reminders 24 hours and 15 minutes before went out (NULL: not yet). Claimed by an
    # UPDATE that only matches while still NULL, so two processes never send one twice; cleared
    # when the session moves.
    reminded_day_at: Mapped[datetime | None] = mapped_column()
    reminded_soon_at: Mapped[datetime | None] = mapped_column()


class Participant(Base):
    """A person's seat in a session: their side, whether they are let in, and where they are."""

    __tablename__ = "meeting_participants"
    __table_args__ = (
        UniqueConstraint("meeting_id", "user_id"),
        CheckConstraint(_one_of("side", Side), name="side_known"),
        CheckConstraint(_one_of("state", SeatState), name="state_known"),
        CheckConstraint(f"room IS NULL OR {_one_of('room', Room)}", name="room_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    side: Mapped[str] = mapped_column(String(12))
    state: Mapped[str] = mapped_column(String(12), default=SeatState.INVITED.value)
    # The room they are in once admitted (kept while they are disconnected: they come back to it).
    room: Mapped[str | None] = mapped_column(String(20))
    invited_at: Mapped[datetime] = mapped_column(default=utcnow)
    admitted_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MeetingMessage(Base):
    """A chat message, stored before it is acknowledged; visible to the entitled of its room."""

    __tablename__ = "meeting_messages"
    __table_args__ = (
        UniqueConstraint("meeting_id", "seq"),
        UniqueConstraint("meeting_id", "sender_id", "client_id"),
        CheckConstraint(_one_of("room", Room), name="room_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    room: Mapped[str] = mapped_column(String(20))
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The sender's own id for the message: a retry with the same id is the same message.
    client_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    # An evidence item of the case shown in the chat as a link (checked, when sent, to be
    # visible to everyone who may read the room).
    material_id: Mapped[int | None] = mapped_column(
        ForeignKey("case_materials.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MeetingConnection(Base):
    """A socket joined to a session, so that any process can move it between rooms."""

    __tablename__ = "meeting_connections"

    meeting_id: Mapped[int] = mapped_column(
        ForeignKey("meetings.id", ondelete="CASCADE"), primary_key=True
    )
    sid: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("meeting_participants.id", ondelete="CASCADE"), index=True
    )
    device: Mapped[str] = mapped_column(String(200), default="")
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The server process holding the socket (a RealtimeProcess): when that process dies, its
    # sockets are gone and another process's sweeper removes them.
    process: Mapped[str] = mapped_column(String(32), default="", server_default="", index=True)


class RealtimeProcess(Base):
    """A running Socket.IO server process, which says it is alive every few seconds."""

    __tablename__ = "realtime_processes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
