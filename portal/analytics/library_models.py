"""The similar-case library (类案检索): one anonymised entry per closed case.

An entry is written once, by ``portal.analytics.library.sync_library``, from a case that reached
the end of its road (closed, or withdrawn after it was accepted), and never changes afterwards.
It holds no personal data: names, identity numbers, phone numbers, account numbers, e-mail
addresses and the like are replaced by role placeholders in its texts, amounts are rounded, and
the closing date is kept to the month. It keeps the case's id only so that each case has one
entry (and the entry goes with the case); pages never show it.

Full-text search reads ``search_text`` (the entry's texts, NFKC-normalised and lower-cased)
through indexes the migration makes by hand for each database, as for the cases themselves
(see ``portal.search`` and migration 0018): not in the models.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class Outcome(StrEnum):
    """How the case ended: the path its status took before it closed."""

    FULFILLED = "fulfilled"  # settled, and the agreement was carried out
    FAILED = "failed"  # mediation failed; the claimant did not go to court (through us)
    TRANSFERRED = "transferred"  # mediation failed and the case went to litigation
    WITHDRAWN = "withdrawn"  # the claimant withdrew it after it was accepted


class LibraryEntry(Base):
    __tablename__ = "library_entries"
    __table_args__ = (
        CheckConstraint(
            "outcome IN (" + ", ".join(repr(o.value) for o in Outcome) + ")",
            name="outcome_known",
        ),
        # The search page filters by category and outcome, newest entry first.
        Index("ix_library_entries_category_outcome", "category", "outcome"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    committee_id: Mapped[int] = mapped_column(ForeignKey("committees.id"), index=True)
    category: Mapped[str] = mapped_column(String(30))
    outcome: Mapped[str] = mapped_column(String(12))
    # The firm is not a person: its name stays (anonymised only when the claimant typed it).
    respondent_name: Mapped[str] = mapped_column(String(120), default="")
    facts: Mapped[str] = mapped_column(Text, default="")
    # What the claimant asked for (codes of portal.cases.service.OUTCOMES).
    claims: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Rounded to two significant figures of the yuan amount (see library.round_fen).
    claimed_fen: Mapped[int | None] = mapped_column(BigInteger)
    agreed_fen: Mapped[int | None] = mapped_column(BigInteger)
    # The effective agreement's terms, amounts rounded and other obligations anonymised
    # (library.terms_summary); empty when no agreement took effect.
    terms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # From acceptance to closing, in working days, less the days the clock was paused.
    working_days: Mapped[int | None] = mapped_column(Integer)
    # The first day of the month the case closed in (month precision on purpose).
    closed_month: Mapped[date] = mapped_column()
    search_text: Mapped[str] = mapped_column(Text, default="")
    # MinHash of the anonymised facts (portal.analytics.shingles.to_bytes).
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
