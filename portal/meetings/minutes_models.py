"""Minutes (调解笔录) of a session: versions of the text and the parties' answers to them.

The mediator writes; every save lands in a version row. Saves by the same author within a short
window update the newest draft instead of adding a row (autosave must not make hundreds), so a
version is "what the text was at a pause", and each row keeps how many saves it took. A version
is a draft (only the mediator sees it), then presented (put to the parties for confirmation),
then confirmed (every required side confirmed exactly this text: it is in the evidence log) or
superseded (changed after it was presented: its answers no longer count).

``revision`` counts every save and every change of state across the session's versions; an
editor sends the revision it started from, and a save from an older one is refused (two tabs).
Each party side answers a presented version once per side (the claimant; the firm through any
of its representatives), bound to the text's SHA-256.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class MinutesState(StrEnum):
    DRAFT = "draft"
    PRESENTED = "presented"
    CONFIRMED = "confirmed"
    SUPERSEDED = "superseded"


class Answer(StrEnum):
    CONFIRMED = "confirmed"
    DECLINED = "declined"


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class MinutesVersion(Base):
    """One version of a session's minutes."""

    __tablename__ = "meeting_minutes"
    __table_args__ = (
        UniqueConstraint("meeting_id", "number"),
        CheckConstraint(_one_of("state", MinutesState), name="state_known"),
        CheckConstraint("number >= 1", name="number_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # Hex SHA-256 of the text's UTF-8 bytes: what the parties confirm and the log records.
    sha256: Mapped[str] = mapped_column(String(64))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(12), default=MinutesState.DRAFT.value)
    # The session's revision counter as of this row's last change (see the module).
    revision: Mapped[int] = mapped_column(Integer)
    saves: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    saved_at: Mapped[datetime] = mapped_column(default=utcnow)
    presented_at: Mapped[datetime | None] = mapped_column()
    confirmed_at: Mapped[datetime | None] = mapped_column()
    superseded_at: Mapped[datetime | None] = mapped_column()
    leaf_id: Mapped[int | None] = mapped_column(ForeignKey("evidence_leaves.id"), index=True)


class MinutesResponse(Base):
    """One side's answer to a presented version: confirmed, or declined with a reason."""

    __tablename__ = "meeting_minutes_responses"
    __table_args__ = (
        UniqueConstraint("version_id", "side"),
        CheckConstraint("side IN ('claimant', 'respondent')", name="side_known"),
        CheckConstraint(_one_of("answer", Answer), name="answer_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("meeting_minutes.id", ondelete="CASCADE"), index=True
    )
    side: Mapped[str] = mapped_column(String(12))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    answer: Mapped[str] = mapped_column(String(10))
    # The SHA-256 of the text the person saw when they answered (that of the version).
    sha256: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
