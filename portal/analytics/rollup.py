"""The dashboard's running totals: reading them, and folding the triggers' changes into them.

Triggers on ``cases`` (migration 0019) append a change to ``case_rollup_delta`` for every filed
case inserted, deleted or changed in a counted column, in the same transaction. :func:`fold`
moves the changes into ``case_rollup`` (one row per month, committee, and category, firm or
mediator, with a histogram of working days) in one transaction; :class:`RollupLoop` runs it in
the background. :func:`totals` reads both tables in one statement, so a figure is exact at the
moment it is read however far behind the folding is.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Integer,
    LargeBinary,
    Select,
    Table,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.analytics.rollup_models import (
    FIGURES,
    KEY,
    NO_DAYS,
    CaseRollup,
    CaseRollupDelta,
)
from portal.background import BackgroundLoop
from portal.db import session_scope

logger = logging.getLogger("jiefen.analytics.rollup")

ROLLUP: Table = CaseRollup.__table__  # type: ignore[assignment]
DELTA: Table = CaseRollupDelta.__table__  # type: ignore[assignment]
# Keys per "WHERE (…) IN" list when folding.
KEYS_PER_STATEMENT = 500
# Any number, the same in every process: folders on PostgreSQL take turns on this lock.
FOLD_LOCK = 0x6A696566656E


def pack(days: np.ndarray[Any, Any]) -> bytes:
    """A histogram of working days as stored: little-endian 32-bit counts, trailing zeros cut."""
    nonzero = np.flatnonzero(days)
    if not len(nonzero):
        return b""
    return days[: nonzero[-1] + 1].astype("<i4").tobytes()


def unpack(stored: bytes) -> np.ndarray[Any, Any]:
    return np.frombuffer(stored, dtype="<i4").astype(np.int64)


@dataclass
class Sum:
    """Figures (in rollup_models.FIGURES order) and a histogram of working days, added up."""

    figures: list[int] = field(default_factory=lambda: [0] * len(FIGURES))
    days: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, other: Sum) -> None:
        self.add_figures(other.figures)
        self.add_days(other.days)

    def add_figures(self, values: Sequence[int]) -> None:
        figures = self.figures
        for i, value in enumerate(values):
            figures[i] += value

    def add_days(self, days: np.ndarray[Any, Any]) -> None:
        if len(days) > len(self.days):
            self.days = np.concatenate([self.days, np.zeros(len(days) - len(self.days), np.int64)])
        self.days[: len(days)] += days

    def add_day(self, day: int, count: int) -> None:
        if day == NO_DAYS or not count:
            return
        if day < 0:
            raise ValueError(f"working days cannot be negative: {day}")
        if day >= len(self.days):
            self.add_days(np.zeros(day + 1, np.int64))
        self.days[day] += count

    def counter(self) -> Counter[int]:
        return Counter({int(d): int(n) for d, n in enumerate(self.days) if n})

    def named(self) -> dict[str, int]:
        return dict(zip(FIGURES, self.figures, strict=True))


@dataclass(frozen=True)
class Slice:
    """The totals of one kind (rollup_models.BY_*) for the months ``first`` to ``last``
    ("2026-01" … "2026-12", both included), optionally of one committee and one ``dim``."""

    kind: int
    first: str
    last: str
    committee_id: int | None = None
    dim: str | None = None


async def totals(db: AsyncSession, where: Slice, by: Sequence[str]) -> dict[tuple[Any, ...], Sum]:
    """The figures of ``where`` added up by the key columns ``by`` ("month", "committee_id",
    "dim"), from the totals and the changes not folded yet, read in one statement (so that a
    fold committing meanwhile is seen whole or not at all): the figures added up by the
    database, then the stored histograms and the pending changes' working days."""

    def sliced(table: Table, *columns: Any) -> Select[Any]:
        part = select(*(table.c[name] for name in by), *columns).where(
            table.c.kind == where.kind, table.c.month.between(where.first, where.last)
        )
        if where.committee_id is not None:
            part = part.where(table.c.committee_id == where.committee_id)
        if where.dim is not None:
            part = part.where(table.c.dim == where.dim)
        return part

    both = union_all(
        *(sliced(table, *(table.c[name] for name in FIGURES)) for table in (ROLLUP, DELTA))
    ).subquery()
    keys = [both.c[name] for name in by]
    # PostgreSQL wants each column of a UNION to have one type, NULLs included.
    no_days, no_hd = cast(null(), LargeBinary), cast(null(), Integer)
    nothing = [cast(null(), BigInteger)] * len(FIGURES)
    statement: CompoundSelect[Any] = union_all(
        select(*keys, literal(0), no_days, no_hd, *(func.sum(both.c[f]) for f in FIGURES)).group_by(
            *keys
        ),
        sliced(ROLLUP, literal(1), ROLLUP.c.days, no_hd, *nothing).where(ROLLUP.c.days != b""),
        sliced(
            DELTA, literal(2), no_days, DELTA.c.hd, cast(DELTA.c.received, BigInteger), *nothing[1:]
        ).where(DELTA.c.hd != NO_DAYS),
    )
    n = len(by)
    found: dict[tuple[Any, ...], Sum] = {}
    histograms: dict[tuple[Any, ...], list[bytes]] = {}
    for row in await db.execute(statement):
        key = tuple(row[:n])
        part = row[n]
        if part == 0:
            found.setdefault(key, Sum()).add_figures([int(v or 0) for v in row[n + 3 :]])
        elif part == 1:
            histograms.setdefault(key, []).append(row[n + 1])
        else:
            found.setdefault(key, Sum()).add_day(int(row[n + 2]), int(row[n + 3]))
    for key, stored in histograms.items():
        width = max(len(days) for days in stored)
        padded = b"".join(days.ljust(width, b"\0") for days in stored)
        found.setdefault(key, Sum()).add_days(
            np.frombuffer(padded, dtype="<i4").reshape(len(stored), -1).sum(axis=0, dtype=np.int64)
        )
    # A group whose cases all moved elsewhere while the change was not folded yet.
    return {key: total for key, total in found.items() if total.figures[0]}


async def fold(db: AsyncSession, batch: int = 50_000) -> int:
    """Move up to ``batch`` changes into the totals, in one transaction (committed here); the
    number moved. Processes folding at once take turns (on SQLite, the first delete does)."""
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK})
    oldest = select(DELTA.c.id).order_by(DELTA.c.id).limit(batch).scalar_subquery()
    taken = await db.execute(
        delete(DELTA)
        .where(DELTA.c.id.in_(oldest))
        .returning(*(DELTA.c[name] for name in (*KEY, "hd", *FIGURES)))
    )
    sums: dict[tuple[Any, ...], Sum] = {}
    count = 0
    n = len(KEY)
    for row in taken:
        count += 1
        key = tuple(row[:n])
        total = sums.get(key)
        if total is None:
            total = sums[key] = Sum()
        values = row[n + 1 :]
        total.add_figures(values)
        total.add_day(row[n], values[0])
    if not sums:
        await db.rollback()
        return 0
    keys = sorted(sums)
    for row in await _take_stored(db, keys):
        total = sums[tuple(row[:n])]
        total.add_figures(row[n + 1 :])
        total.add_days(unpack(row[n]))
    rows = []
    for key in keys:
        total = sums[key]
        if total.figures[0]:  # else no case is left in the group: every figure is back to 0
            if (total.days < 0).any() or total.figures[0] < 0:
                raise RuntimeError(f"case_rollup went negative at {key}: rebuild it")
            rows.append(
                {**dict(zip(KEY, key, strict=True)), **total.named(), "days": pack(total.days)}
            )
    if rows:
        await db.execute(insert(ROLLUP), rows)
    await db.commit()
    return count


async def _take_stored(db: AsyncSession, keys: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Delete the stored totals of ``keys`` and return them (key, days, figures)."""
    columns = ", ".join(f"r.{name}" for name in (*KEY, "days", *FIGURES))
    taken: list[Any] = []
    if db.get_bind().dialect.name == "postgresql":
        # All at once, joined to the keys passed as arrays.
        statement = text(
            "DELETE FROM case_rollup AS r USING unnest(CAST(:kinds AS smallint[]), "  # noqa: S608
            "CAST(:months AS varchar[]), CAST(:committees AS integer[]), "
            "CAST(:dims AS varchar[])) AS t(kind, month, committee_id, dim) "
            "WHERE r.kind = t.kind AND r.month = t.month AND r.committee_id = t.committee_id "
            f"AND r.dim = t.dim RETURNING {columns}"
        )
        for chunk in _chunks(keys, 20_000):
            kinds, months, committees, dims = (list(column) for column in zip(*chunk, strict=True))
            found = await db.execute(
                statement,
                {"kinds": kinds, "months": months, "committees": committees, "dims": dims},
            )
            taken.extend(found)
        return taken
    # SQLite: by (kind, month, committee), each a range of the primary key.
    cells: dict[tuple[Any, ...], list[str]] = {}
    for kind, month, committee_id, dim in keys:
        cells.setdefault((kind, month, committee_id), []).append(dim)
    returned = [ROLLUP.c[name] for name in (*KEY, "days", *FIGURES)]
    for (kind, month, committee_id), dims in cells.items():
        for part in _chunks(dims, KEYS_PER_STATEMENT):
            matching = (
                ROLLUP.c.kind == kind,
                ROLLUP.c.month == month,
                ROLLUP.c.committee_id == committee_id,
                ROLLUP.c.dim.in_(part),
            )
            taken.extend(await db.execute(delete(ROLLUP).where(*matching).returning(*returned)))
    return taken


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RollupLoop(BackgroundLoop):
    """Folds the triggers' changes every ``interval`` seconds, straight on while batches are
    full (after the migration, or a bulk import). Reading never waits for it; it keeps the
    changes table short, and so the dashboard fast."""

    name = "jiefen-rollup"
    log = logger

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval: float = 30.0,
        batch: int = 50_000,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.batch = batch

    async def run_once(self) -> bool:
        async with session_scope(self.sessionmaker) as db:
            moved = await fold(db, self.batch)
        return moved >= self.batch
