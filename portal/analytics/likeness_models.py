"""Template-complaint detection (likeness): each filing's MinHash fingerprint, and the pairs of
filings found alike. See portal.analytics.likeness."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from portal.cases.models import Case
from portal.db import Base, utcnow


class CaseFingerprint(Base):
    """The MinHash of a filing's facts (portal.analytics.shingles), written in the transaction
    that submits the case (or at the index's rebuild, for cases filed before this table).

    ``created_at`` is when the row was written, not when the case was filed: each process's
    in-memory index reads the rows written since it last looked. ``compared`` is false until the
    filing has been compared with the others and its alike pairs stored (done at filing when the
    index is ready, else by the index's maintenance loop).
    """

    __tablename__ = "case_fingerprints"

    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    committee_id: Mapped[int] = mapped_column(ForeignKey("committees.id"))
    # NUM_PERM 32-bit hash values, little-endian (shingles.to_bytes): 512 bytes.
    minhash: Mapped[bytes] = mapped_column(LargeBinary)
    compared: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class LikenessPair(Base):
    """Two filings found alike (estimated Jaccard similarity of their shingles at or above the
    cut-off), stored once with the lower case id first. Each filing stores at most its nearest
    few (likeness.MAX_PAIRS): enough to join a template's filings into one cluster."""

    __tablename__ = "case_likeness_pairs"
    __table_args__ = (CheckConstraint("case_id < other_id", name="ordered"),)

    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    other_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    similarity: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Exact matches across filings (same agent organisation, same filing address) are counted on
# the case page for staff: these two columns of `cases` are indexed for that, by this feature
# (migration 0017). The agent's phone has its own index already (cases.agent_phone_index).
Index("ix_cases_agent_org", Case.agent_org)
Index("ix_cases_filing_ip", Case.filing_ip)
