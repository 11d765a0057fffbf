"""Notifications: an outbox of messages to users, one row per channel, with delivery status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow

CHANNELS = ("in_app", "email", "sms")
EXTERNAL_CHANNELS = ("email", "sms")
STATUSES = ("pending", "sent", "failed")


class Notification(Base):
    """One message to one user on one channel.

    The text is kept as the English source strings of a ``Msg`` and their parameters, and is
    translated into the recipient's language when shown or sent. In-app rows are "sent" when
    written; email and SMS rows wait in the outbox ("pending") for the delivery worker, which
    records the provider's id (the 送达 receipt) or the reason it gave up.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("channel IN ('in_app', 'email', 'sms')", name="channel_known"),
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status_known"),
        # Leads with user_id, so it also serves every per-user look-up (no separate index).
        Index("ix_notifications_unread", "user_id", "channel", "read_at"),
        Index("ix_notifications_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))
    title_msgid: Mapped[str] = mapped_column(Text)
    body_msgid: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    link: Mapped[str] = mapped_column(String(300), default="")
    # What the email carries, as "<kind>:<key>" (e.g. "meeting:12"): the delivery worker asks the
    # builder registered for that kind to make the file at send time, so it is current.
    attachment: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # Exception class and message, with addresses and numbers removed; never personal data.
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    read_at: Mapped[datetime | None] = mapped_column()
