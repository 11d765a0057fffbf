"""Recordings of a session's room, made only with the consent of everyone in it.

A recording belongs to one room of one session. The mediator asks; everyone present answers in
their own client (``recording_consents`` keeps every answer with its time, withdrawals too).
It is made by a server-side WebRTC peer on one server process (``process``), which writes each
consenting participant's tracks into ``STORAGE_DIR/recordings/<id>/`` and, once stopped, seals
them: a mixed-down audio file of the room is made, and every file becomes an evidence item of
the case (encrypted, in the evidence log) listed in ``recording_files``.

Status: ``asking`` → ``recording`` → ``sealing`` → ``sealed`` (or ``lost``, reported, if nothing
could be recovered); ``asking`` → ``declined`` (someone said no) or ``cancelled``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class RecordingStatus(StrEnum):
    ASKING = "asking"
    RECORDING = "recording"
    SEALING = "sealing"
    SEALED = "sealed"
    LOST = "lost"
    DECLINED = "declined"
    CANCELLED = "cancelled"


# Why a recording stopped.
class StopReason(StrEnum):
    STOPPED = "stopped"  # the mediator stopped it
    ENDED = "ended"  # the session ended
    WITHDRAWN = "withdrawn"  # someone who had agreed withdrew their consent
    REFUSED = "refused"  # someone who came in later said no
    FAILED = "failed"  # the recorder's connection failed
    INTERRUPTED = "interrupted"  # the server process stopped while recording


ACTIVE = frozenset({RecordingStatus.ASKING, RecordingStatus.RECORDING, RecordingStatus.SEALING})


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Recording(Base):
    __tablename__ = "meeting_recordings"
    __table_args__ = (
        CheckConstraint(_one_of("status", RecordingStatus), name="status_known"),
        CheckConstraint(f"reason IS NULL OR {_one_of('reason', StopReason)}", name="reason_known"),
        Index("ix_meeting_recordings_meeting_id_room", "meeting_id", "room"),
        Index("ix_meeting_recordings_status_process", "status", "process"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    room: Mapped[str] = mapped_column(String(20))
    # Video is recorded too (a video session, and the mediator chose it).
    video: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(10), default=RecordingStatus.ASKING.value)
    reason: Mapped[str | None] = mapped_column(String(12))
    # Stopped before the mediator or the end of the session stopped it.
    partial: Mapped[bool] = mapped_column(default=False)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The server process that records (a RealtimeProcess id).
    process: Mapped[str] = mapped_column(String(32), default="")
    asked_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    stopped_at: Mapped[datetime | None] = mapped_column()
    sealed_at: Mapped[datetime | None] = mapped_column()
    # What went wrong when sealing, said to the mediator and kept ("" if nothing).
    problem: Mapped[str] = mapped_column(Text, default="")
    # The ``recording`` leaf written when sealed: its files and every consent answer.
    leaf_id: Mapped[int | None] = mapped_column(ForeignKey("evidence_leaves.id"), index=True)


class RecordingConsent(Base):
    """One answer of one person, with its time (a withdrawal is a later answer)."""

    __tablename__ = "meeting_recording_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("meeting_recordings.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    agreed: Mapped[bool] = mapped_column()
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordingFile(Base):
    """A sealed file of a recording: one participant's track, or the room's mix."""

    __tablename__ = "meeting_recording_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(
        ForeignKey("meeting_recordings.id", ondelete="CASCADE"), index=True
    )
    # "mix" (the room's audio, for listening), "audio" or "video" (one participant's track).
    kind: Mapped[str] = mapped_column(String(8))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    material_id: Mapped[int] = mapped_column(ForeignKey("case_materials.id", ondelete="CASCADE"))
    # Seconds from the start of the recording to the start of this track, and its length.
    offset_ms: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
