"""The audit trail: one row for every change anybody makes and every time someone other than
the person sees a case's identity data; digests of it go into the evidence log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_digest_id", "digest_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(64))
    # Never personal data: ids, codes and field names only.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # The digest (and so the evidence-log leaf) that covers this event; None until digested.
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("audit_digests.id"))


class AuditDigest(Base):
    """SHA-256 over a run of audit events (in id order, each as one canonical JSON line),
    chained to the previous digest; the same figures are a leaf of the evidence log."""

    __tablename__ = "audit_digests"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_event_id: Mapped[int]
    last_event_id: Mapped[int]
    count: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    prev_sha256: Mapped[str | None] = mapped_column(String(64))
    leaf_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("evidence_leaves.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When events past the retention period were deleted: they can no longer be re-hashed.
    purged_at: Mapped[datetime | None]
