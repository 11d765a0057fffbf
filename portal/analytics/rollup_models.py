"""The dashboard's running totals (portal.analytics.rollup): the figures of the cases filed in
each month at each committee, added up by category, by firm and by mediator, kept by triggers
on ``cases`` (migration 0019) so that the dashboard reads thousands of rows, not every case."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, LargeBinary, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base

# What a row adds up by: 1 = category, 2 = firm (its id, "" for none), 3 = mediator (the same).
BY_CATEGORY, BY_FIRM, BY_MEDIATOR = 1, 2, 3
# A change's "hd" when the case did not end in settlement or failure (or its working days are
# unknown).
NO_DAYS = -1


class _Figures:
    """The figures of a group of cases, as portal.analytics.stats.Figures counts them (all but
    the payments, which change without the case changing)."""

    received: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    settled: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    claimed_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    agreed_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    waived_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    firm_asked: Mapped[int] = mapped_column(Integer, default=0)
    firm_answered: Mapped[int] = mapped_column(Integer, default=0)


FIGURES = (
    "received",
    "accepted",
    "settled",
    "failed",
    "withdrawn",
    "rejected",
    "claimed_fen",
    "agreed_fen",
    "waived_fen",
    "firm_asked",
    "firm_answered",
)
KEY = ("kind", "month", "committee_id", "dim")


class CaseRollup(_Figures, Base):
    """The cases filed in ``month`` (China time, "2026-03") at ``committee_id``, of one
    category, firm or mediator (``kind``, ``dim``). ``days`` holds how many of them settled or
    failed after 0, 1, 2… working days: little-endian 32-bit counts (portal.analytics.rollup),
    so that a median over any months is exact."""

    __tablename__ = "case_rollup"

    kind: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    committee_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dim: Mapped[str] = mapped_column(String(30), primary_key=True)
    days: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class CaseRollupDelta(_Figures, Base):
    """A change to the totals, appended by the triggers on ``cases`` in the transaction that
    changed the case (+1 for a case as it is now, -1 for it as it was; ``hd``: its working days
    or NO_DAYS; the migration's backfill adds up many cases in one row), folded into
    ``case_rollup`` by :class:`portal.analytics.rollup.RollupLoop`. Appending, not updating,
    keeps concurrent transactions from waiting on (or deadlocking over) the same totals."""

    __tablename__ = "case_rollup_delta"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[int] = mapped_column(SmallInteger)
    month: Mapped[str] = mapped_column(String(7))
    committee_id: Mapped[int] = mapped_column(Integer)
    dim: Mapped[str] = mapped_column(String(30))
    hd: Mapped[int] = mapped_column(Integer)
