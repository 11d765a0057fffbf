"""Template-complaint detection (likeness): filings whose facts are near copies of each other.

Black-market "rights-protection" agents (黑维) hand many consumers one prepared complaint; each
fills in their own name, firm, amounts and dates and files it. Staff should see that a filing
belongs to such a batch; the label informs them and never rejects a filing.

How alike two filings are is the Jaccard similarity of their 3-character shingle sets, estimated
from MinHash fingerprints (portal.analytics.shingles, 128 hash values). The decision:

1. A banded LSH index (``Bands``, ``BANDS`` bands of ``ROWS`` hash values: the candidates that
   datasketch's ``MinHashLSH(params=(BANDS, ROWS))`` gives, without importing it, which imports
   scipy) proposes candidates: the filings that share all ``ROWS`` values of at least one band.
   A pair at similarity s becomes a candidate with probability 1 - (1 - s**2)**20, 0.98 at
   s = 0.43 (the least alike template pair in the labelled set), 0.18 at s = 0.1 (two unrelated
   complaints on one topic).
2. A candidate is alike when the estimate over all 128 values is at least ``CUTOFF`` (0.35):
   template filings with 5-15% of their characters changed and their sentences moved measure
   0.43-0.8, independent complaints on one topic 0.02-0.31 (tests/analytics/test_likeness.py
   measures precision and recall on a generated labelled set; both are above 0.99).

Every filing's fingerprint is stored (``case_fingerprints``) in the transaction that submits it,
with its nearest alike filings (``case_likeness_pairs``, at most ``MAX_PAIRS``), which the
administrators' clusters are built from. The LSH index lives in memory, one per process
(``LikenessIndex``, in app state): it is rebuilt from the table when the process starts
(fingerprinting cases filed before this feature on the way), and before each use it reads the
rows other processes have written since it last looked (``sync``: one indexed query). A filing
made while the index is not ready, or by code that has none (the command line, tests'
factories), is stored "not compared"; the index's loop compares it soon after.

Exact matches count too: the same agent phone (a keyed hash), agent organisation or filing
address across filings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from sqlalchemy import CursorResult, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from portal.analytics.likeness_models import CaseFingerprint, LikenessPair
from portal.analytics.shingles import (
    EMPTY,
    NUM_PERM,
    SHINGLE,
    fingerprint,
    from_bytes,
    normalise,
    shingles,
    to_bytes,
)
from portal.background import BackgroundLoop
from portal.cases.models import Case
from portal.db import session_scope, utcnow
from portal.orgs.models import Committee
from portal.policy import Identity, Role

logger = logging.getLogger("jiefen.likeness")

TZ = ZoneInfo("Asia/Shanghai")
BANDS, ROWS = 20, 2  # LSH: 20 bands of 2 hash values (40 of the 128)
CUTOFF = 0.35  # estimated Jaccard similarity from which two filings are alike
MAX_PAIRS = 20  # alike pairs stored per filing, the nearest first
# Rows written up to this long before the newest one seen are read again by ``sync``: a filing
# transaction that wrote its row earlier than that and commits only now would be missed (until
# the next restart). Filing transactions last milliseconds.
WINDOW = timedelta(minutes=5)
RESCAN = 10.0  # seconds between those re-reads, per process
BATCH = 500  # rows per step when rebuilding or backfilling
SETTLE = 100  # filings compared per round of the loop (what was stored "not compared")
MAX_EDGES = 200_000  # pairs read for the clusters page at most
MAX_WEEKS = 26  # weeks shown per cluster, the latest

Values = npt.NDArray[np.uint32]


@dataclass(frozen=True)
class Match:
    case_id: int
    similarity: float


def values_of(text: str) -> Values:
    """The fingerprint's hash values (shingles.fingerprint), as stored and indexed."""
    return fingerprint(text)


def _blank(values: Values) -> bool:
    """A fingerprint no shingle gave (facts without any text)."""
    return bool((values == EMPTY).all())


def _insert(db: AsyncSession) -> Any:
    return pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert


def _chunks(items: Sequence[int], size: int = 1000) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the in-memory index ----------------------------------------------------------------------


class Bands:
    """Banded LSH: the fingerprint's first ``bands * rows`` values cut into ``bands`` bands of
    ``rows``; per band, a dict from the band's values (as bytes) to the keys inserted with them.
    A query's candidates are the keys that share at least one whole band with it: the set
    datasketch's ``MinHashLSH(num_perm, params=(bands, rows))`` returns for the same inserts
    (tests/analytics/test_minhash_crosscheck.py compares them)."""

    def __init__(self, bands: int = BANDS, rows: int = ROWS, num_perm: int = NUM_PERM) -> None:
        if bands < 2 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"{bands} bands of {rows} do not fit {num_perm} hash values")
        self.num_perm = num_perm
        self._ranges = [(i * rows, (i + 1) * rows) for i in range(bands)]
        self._tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]

    def _keys(self, values: Values) -> list[bytes]:
        values = np.asarray(values, dtype=np.uint32)
        if values.shape != (self.num_perm,):
            raise ValueError(f"expected {self.num_perm} hash values, got {values.shape}")
        return [values[start:end].tobytes() for start, end in self._ranges]

    def insert(self, key: int, values: Values) -> None:
        """Index ``key`` under its fingerprint's bands (once: the caller does not repeat keys)."""
        for band, table in zip(self._keys(values), self._tables, strict=True):
            table.setdefault(band, []).append(key)

    def query(self, values: Values) -> set[int]:
        """The keys sharing at least one band with ``values``."""
        found: set[int] = set()
        for band, table in zip(self._keys(values), self._tables, strict=True):
            found.update(table.get(band, ()))
        return found


class LikenessIndex(BackgroundLoop):
    """The LSH index of every filing's fingerprint, one per process, in app state.

    Its loop (``start`` in the app's lifespan, ``stop`` on the way out) rebuilds it from the
    table, fingerprinting on the way the cases filed before the table existed, then every
    ``interval`` seconds (or when woken) reads rows other processes wrote and compares the
    filings stored "not compared". Until it is ready, filings are stored "not compared" and the
    case page says the comparison is being prepared.
    """

    name = "jiefen-likeness"
    log = logger

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        *,
        interval: float = 30.0,
        bands: int = BANDS,
        rows: int = ROWS,
        cutoff: float = CUTOFF,
    ) -> None:
        super().__init__(interval)
        self.sessions = sessions
        self.cutoff = cutoff
        self._bands = Bands(bands, rows)
        self._matrix: Values = np.empty((1024, NUM_PERM), dtype=np.uint32)
        self._committees: npt.NDArray[np.int64] = np.empty(1024, dtype=np.int64)
        self._ids: npt.NDArray[np.int64] = np.empty(1024, dtype=np.int64)  # row -> case id
        self._row_of: dict[int, int] = {}  # case id -> row of the matrix
        self._blank: set[int] = set()  # fingerprints of facts without text: never alike
        self._pending: set[int] = set()  # loaded, but not yet compared with the others
        self._high_water: datetime | None = None  # the newest row seen (None: not loaded)
        # Rebuilding, step by step: backfill the cases filed before the table, then load.
        self._backfilled_to = 0
        self._backfilled = 0
        self._loaded_to: int | None = None
        self._load_started: datetime | None = None
        self._newest_loaded: datetime | None = None
        self._built = asyncio.Event()
        self._rescanned = 0.0  # monotonic() of the last re-read of the WINDOW

    # -- what it holds ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._row_of or case_id in self._blank

    @property
    def ready(self) -> bool:
        """Loaded from the table: filings can be compared."""
        return self._high_water is not None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, case_id: int, committee_id: int, values: Values) -> None:
        """Index one filing (once; facts without text are remembered but never alike)."""
        if case_id in self:
            return
        if _blank(values):
            self._blank.add(case_id)
            return
        row = len(self._row_of)
        if row == len(self._matrix):
            grown = max(1024, row // 2)
            self._matrix = np.concatenate(
                [self._matrix, np.empty((grown, NUM_PERM), dtype=np.uint32)]
            )
            self._committees = np.concatenate([self._committees, np.empty(grown, np.int64)])
            self._ids = np.concatenate([self._ids, np.empty(grown, np.int64)])
        self._matrix[row] = values
        self._committees[row] = committee_id
        self._ids[row] = case_id
        self._row_of[case_id] = row
        # The LSH's keys are rows of the matrix: a query's candidates index it directly.
        self._bands.insert(row, self._matrix[row])

    def values(self, case_id: int) -> Values | None:
        row = self._row_of.get(case_id)
        return None if row is None else self._matrix[row]

    def similar(
        self,
        values: Values,
        *,
        exclude: int | None = None,
        committee_id: int | None = None,
        limit: int | None = None,
    ) -> list[Match]:
        """The indexed filings alike to ``values``, the most alike first: LSH candidates whose
        estimated similarity is at least the cut-off (``committee_id``: only that committee's)."""
        if _blank(values) or not self._row_of:
            return []
        keys = self._bands.query(values)
        rows = np.fromiter(keys, dtype=np.int64, count=len(keys))
        if exclude is not None and exclude in self._row_of:
            rows = rows[rows != self._row_of[exclude]]
        if committee_id is not None:
            rows = rows[self._committees[rows] == committee_id]
        if not len(rows):
            return []
        estimates = np.count_nonzero(self._matrix[rows] == values, axis=1) / NUM_PERM
        alike = estimates >= self.cutoff
        ids, estimates = self._ids[rows[alike]], estimates[alike]
        order = np.lexsort((ids, -estimates))  # most alike first, then the earliest case
        if limit is not None:
            order = order[:limit]
        return [Match(int(ids[i]), round(float(estimates[i]), 3)) for i in order]

    # -- keeping up with the table ------------------------------------------------------------

    async def sync(self, db: AsyncSession, *, rescan: bool | None = None) -> int:
        """Index the rows other processes (and this one's committed filings) wrote since the
        newest one seen: one indexed query, which normally returns that one row and the new
        ones. Every ``RESCAN`` seconds (and in the loop) it reads the rows of the last
        ``WINDOW`` instead, for a transaction that wrote its row before the newest one seen and
        committed after that was read. Returns how many rows were new."""
        if self._high_water is None:
            return 0
        now = monotonic()
        if rescan is None:
            rescan = now - self._rescanned >= RESCAN
        columns = (
            CaseFingerprint.case_id,
            CaseFingerprint.committee_id,
            CaseFingerprint.minhash,
            CaseFingerprint.compared,
            CaseFingerprint.created_at,
        )
        if rescan:
            self._rescanned = now
            seen = (
                await db.execute(
                    select(CaseFingerprint.case_id, CaseFingerprint.created_at).where(
                        CaseFingerprint.created_at >= self._high_water - WINDOW
                    )
                )
            ).all()
            new = [row.case_id for row in seen if row.case_id not in self]
            rows: list[Any] = []
            for chunk in _chunks(new):
                query = select(*columns).where(CaseFingerprint.case_id.in_(chunk))
                rows += (await db.execute(query)).all()
        else:
            query = select(*columns).where(CaseFingerprint.created_at >= self._high_water)
            rows = [row for row in (await db.execute(query)).all() if row.case_id not in self]
        if rows:
            self._high_water = max(self._high_water, max(row.created_at for row in rows))
        self._load(rows)
        if self._pending:
            self.wake()
        return len(rows)

    def _load(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.add(row.case_id, row.committee_id, _values(row.minhash))
            if not row.compared:
                self._pending.add(row.case_id)

    async def rebuild(self) -> None:
        """Build the index from the table now (the loop does it in steps when started)."""
        while not self.ready:
            await self._rebuild_step()

    async def wait_ready(self) -> None:
        """Wait until the loop has built the index (tests, the benchmark)."""
        await self._built.wait()

    async def _rebuild_step(self) -> None:
        """One step of the rebuild: fingerprint a batch of cases filed before the table
        existed; once there are none, load a batch of rows (by case id)."""
        assert self.sessions is not None, "the index needs a session factory to load"
        async with session_scope(self.sessions) as db:
            if self._loaded_to is None:
                if await self._backfill(db) < BATCH:
                    if self._backfilled:
                        logger.info(
                            "likeness: fingerprinted %s cases filed before it existed",
                            self._backfilled,
                        )
                    self._loaded_to = 0
                    self._load_started = utcnow()
                return
            rows = (
                await db.execute(
                    select(
                        CaseFingerprint.case_id,
                        CaseFingerprint.committee_id,
                        CaseFingerprint.minhash,
                        CaseFingerprint.compared,
                        CaseFingerprint.created_at,
                    )
                    .where(CaseFingerprint.case_id > self._loaded_to)
                    .order_by(CaseFingerprint.case_id)
                    .limit(BATCH)
                )
            ).all()
        self._load(rows)
        if rows:
            self._loaded_to = rows[-1].case_id
            newest = max(row.created_at for row in rows)
            self._newest_loaded = max(self._newest_loaded or newest, newest)
        if len(rows) < BATCH:
            # Rows written while loading, under case ids already passed, are read by the
            # first sync: it starts no later than the load did (less WINDOW).
            assert self._load_started is not None
            self._high_water = min(self._newest_loaded or self._load_started, self._load_started)
            self._rescanned = monotonic()
            self._built.set()
            logger.info("likeness index ready: %s filings", len(self))

    async def _backfill(self, db: AsyncSession) -> int:
        """Fingerprints for a batch of cases filed before this table existed (not compared)."""
        rows = (
            await db.execute(
                select(Case.id, Case.committee_id, Case.facts)
                .where(
                    Case.id > self._backfilled_to,
                    Case.submitted_at.is_not(None),
                    ~select(CaseFingerprint.case_id)
                    .where(CaseFingerprint.case_id == Case.id)
                    .exists(),
                )
                .order_by(Case.id)
                .limit(BATCH)
            )
        ).all()
        if not rows:
            return 0
        # About a millisecond each: in a thread, so that the event loop keeps serving.
        facts = [row.facts or "" for row in rows]
        prints = await asyncio.to_thread(lambda: [to_bytes(fingerprint(f)) for f in facts])
        now = utcnow()
        values = [
            {
                "case_id": row.id,
                "committee_id": row.committee_id,
                "minhash": minhash,
                "compared": False,
                "created_at": now,
            }
            for row, minhash in zip(rows, prints, strict=True)
        ]
        insert = _insert(db)
        await db.execute(
            insert(CaseFingerprint)
            .values(values)
            .on_conflict_do_nothing(index_elements=["case_id"])
        )
        await db.commit()
        self._backfilled_to = rows[-1].id
        self._backfilled += len(rows)
        return len(rows)

    async def settle(self, db: AsyncSession, limit: int = SETTLE) -> int:
        """Compare up to ``limit`` filings stored "not compared" with all the others and store
        their alike pairs (the caller commits). Each is claimed by an UPDATE that matches only
        while it is still not compared, so that two processes do not both do it."""
        batch = sorted(self._pending)[:limit]
        if not batch:
            return 0
        self._pending.difference_update(batch)
        result = await db.execute(
            update(CaseFingerprint)
            .where(CaseFingerprint.case_id.in_(batch), CaseFingerprint.compared.is_(False))
            .values(compared=True)
            .returning(CaseFingerprint.case_id)
            .execution_options(synchronize_session=False)
        )
        claimed = sorted(cast("CursorResult[Any]", result).scalars().all())
        for n, case_id in enumerate(claimed, start=1):
            if n % 10 == 0:
                await asyncio.sleep(0)  # a few milliseconds each: let others run between
            values = self.values(case_id)
            if values is not None:
                matches = self.similar(values, exclude=case_id, limit=MAX_PAIRS)
                await store_pairs(db, case_id, matches)
        return len(claimed)

    async def run_once(self) -> bool:
        if not self.ready:
            await self._rebuild_step()
            return True
        assert self.sessions is not None
        async with session_scope(self.sessions) as db:
            await self.sync(db, rescan=True)
            if await self.settle(db):
                await db.commit()
        return bool(self._pending)


def _values(data: bytes) -> Values:
    if len(data) != NUM_PERM * 4:
        return from_bytes(data)
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


# -- at filing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilingCheck:
    compared: bool  # False: stored for the index's loop to compare
    matches: list[Match] = field(default_factory=list)


async def store_pairs(db: AsyncSession, case_id: int, matches: Sequence[Match]) -> None:
    """The alike pairs of one filing, lower case id first; pairs already stored are kept."""
    if not matches:
        return
    others = [m.case_id for m in matches]
    # Only filings that still exist (an index may remember a case deleted since).
    existing = set(
        await db.scalars(select(CaseFingerprint.case_id).where(CaseFingerprint.case_id.in_(others)))
    )
    now = utcnow()
    rows = [
        {
            "case_id": min(case_id, m.case_id),
            "other_id": max(case_id, m.case_id),
            "similarity": m.similarity,
            "created_at": now,
        }
        for m in matches
        if m.case_id in existing and m.case_id != case_id
    ]
    if rows:
        rows.sort(key=lambda r: (r["case_id"], r["other_id"]))  # one lock order for everyone
        await db.execute(
            _insert(db)(LikenessPair)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["case_id", "other_id"])
        )


async def check_filing(db: AsyncSession, index: LikenessIndex | None, case: Case) -> FilingCheck:
    """At submission, in its transaction: the filing's fingerprint, compared with every earlier
    filing when the index is ready, and its nearest alike filings. The caller commits."""
    values = values_of(case.facts or "")
    matches: list[Match] = []
    compared = False
    if index is not None and index.ready:
        await index.sync(db)
        matches = index.similar(values, exclude=case.id, limit=MAX_PAIRS)
        compared = True
    await db.execute(
        _insert(db)(CaseFingerprint)
        .values(
            case_id=case.id,
            committee_id=case.committee_id,
            minhash=bytes(values.astype("<u4").tobytes()),
            compared=compared,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["case_id"])
    )
    await store_pairs(db, case.id, matches)
    if index is not None and not compared:
        index.wake()
    return FilingCheck(compared=compared, matches=matches)


# -- for staff: one case ----------------------------------------------------------------------


def committee_scope(who: Identity, case: Case | None = None) -> int | None:
    """The committee whose filings this person compares with: all (None) for a platform
    administrator, else the case's committee (or their own)."""
    if who.role == Role.PLATFORM_ADMIN:
        return None
    if case is not None:
        return case.committee_id
    return who.committee_id if who.committee_id is not None else -1


def claimant_key(claimant_id_index: str | None, filer_id: int) -> str:
    """Claimants are told apart by their ID number's keyed hash, else by who filed."""
    return f"id:{claimant_id_index}" if claimant_id_index else f"filer:{filer_id}"


@dataclass(frozen=True)
class Shared:
    """Other filings (in scope) with the same agent phone, agent organisation, filing address."""

    agent_phone: int = 0
    agent_org: int = 0
    filing_ip: int = 0

    @property
    def any(self) -> bool:
        return bool(self.agent_phone or self.agent_org or self.filing_ip)


@dataclass(frozen=True)
class Summary:
    ready: bool
    filings: int = 0  # other filings alike to this one
    claimants: int = 0  # distinct claimants among them
    shared: Shared = Shared()
    matches: list[Match] = field(default_factory=list)


def _filed(scope: int | None) -> list[Any]:
    where: list[Any] = [Case.submitted_at.is_not(None)]
    if scope is not None:
        where.append(Case.committee_id == scope)
    return where


async def shared_agents(db: AsyncSession, case: Case, scope: int | None) -> Shared:
    """Counts of exact matches in one query (each count an indexed lookup)."""

    def count(column: Any, value: str | None) -> Any:
        if not value or value == "unknown":
            return literal(0)
        return (
            select(func.count())
            .select_from(Case)
            .where(column == value, Case.id != case.id, *_filed(scope))
            .scalar_subquery()
        )

    row = (
        await db.execute(
            select(
                count(Case.agent_phone_index, case.agent_phone_index),
                count(Case.agent_org, case.agent_org),
                count(Case.filing_ip, case.filing_ip),
            )
        )
    ).one()
    return Shared(agent_phone=int(row[0]), agent_org=int(row[1]), filing_ip=int(row[2]))


async def same_agent(
    db: AsyncSession, case: Case, scope: int | None, limit: int = 20
) -> list[Case]:
    """Other filings (in scope) by the same agent: same agent phone or organisation."""
    same = []
    if case.agent_phone_index:
        same.append(Case.agent_phone_index == case.agent_phone_index)
    if case.agent_org:
        same.append(Case.agent_org == case.agent_org)
    if not same:
        return []
    return list(
        await db.scalars(
            select(Case)
            .where(or_(*same), Case.id != case.id, *_filed(scope))
            .order_by(Case.submitted_at.desc(), Case.id.desc())
            .limit(limit)
        )
    )


async def _filing_values(db: AsyncSession, index: LikenessIndex, case: Case) -> Values:
    values = index.values(case.id)
    if values is not None:
        return values
    stored = await db.scalar(
        select(CaseFingerprint.minhash).where(CaseFingerprint.case_id == case.id)
    )
    return _values(stored) if stored is not None else values_of(case.facts or "")


async def case_summary(
    db: AsyncSession, index: LikenessIndex, case: Case, who: Identity
) -> Summary:
    """For the case page: how many filings (that this person's scope covers) are alike to this
    one, from how many claimants, and the exact matches of agent and address."""
    scope = committee_scope(who, case)
    shared = await shared_agents(db, case, scope)
    if not index.ready:
        return Summary(ready=False, shared=shared)
    await index.sync(db)
    values = await _filing_values(db, index, case)
    matches = index.similar(values, exclude=case.id, committee_id=scope)
    claimants: set[str] = set()
    for chunk in _chunks([m.case_id for m in matches]):
        rows = await db.execute(
            select(Case.claimant_id_index, Case.filer_id).where(Case.id.in_(chunk))
        )
        claimants.update(claimant_key(r.claimant_id_index, r.filer_id) for r in rows)
    return Summary(
        ready=True,
        filings=len(matches),
        claimants=len(claimants),
        shared=shared,
        matches=matches,
    )


@dataclass(frozen=True)
class Near:
    """One alike filing beside this one: its facts, how alike, which agent details it shares."""

    case: Case
    similarity: float
    same_agent_phone: bool
    same_agent_org: bool
    same_filing_ip: bool


@dataclass(frozen=True)
class Comparison:
    summary: Summary
    nearest: list[Near]
    same_agent: list[Case]  # other filings by the same agent, alike or not


async def compare(
    db: AsyncSession, index: LikenessIndex, case: Case, who: Identity, limit: int = 10
) -> Comparison:
    """The side-by-side view: this filing and its ``limit`` nearest alike filings."""
    summary = await case_summary(db, index, case, who)
    top = summary.matches[:limit]
    loaded = {
        c.id: c for c in await db.scalars(select(Case).where(Case.id.in_([m.case_id for m in top])))
    }

    def same(a: str | None, b: str | None) -> bool:
        return bool(a) and a == b and a != "unknown"

    nearest = [
        Near(
            case=other,
            similarity=m.similarity,
            same_agent_phone=same(case.agent_phone_index, other.agent_phone_index),
            same_agent_org=same(case.agent_org, other.agent_org),
            same_filing_ip=same(case.filing_ip, other.filing_ip),
        )
        for m in top
        if (other := loaded.get(m.case_id)) is not None
    ]
    by_agent = await same_agent(db, case, committee_scope(who, case))
    return Comparison(summary=summary, nearest=nearest, same_agent=by_agent)


# -- for administrators: clusters over time ---------------------------------------------------


@dataclass(frozen=True)
class ClusterFilters:
    since: date
    until: date  # inclusive
    committee_id: int | None = None
    min_size: int = 3


@dataclass(frozen=True)
class ClusterCase:
    id: int
    number: str | None
    submitted_at: datetime


@dataclass(frozen=True)
class Cluster:
    size: int
    claimants: int
    firms: list[tuple[str, int]]  # respondent names, the most frequent first
    agents: int  # distinct agent organisations or phones among the filings
    first: datetime
    last: datetime
    weeks: list[tuple[str, int]]  # ISO week in China ("2026-W49"), filings that week
    cases: list[ClusterCase]

    @property
    def peak(self) -> int:
        return max((n for _, n in self.weeks), default=0)


@dataclass(frozen=True)
class ClusterReport:
    clusters: list[Cluster]
    total: int  # clusters found (the page shows the largest)
    truncated: bool  # more pairs than MAX_EDGES in the period: narrow it


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), TZ).astimezone(UTC)


def _week(moment: datetime) -> tuple[int, int]:
    year, week, _ = moment.astimezone(TZ).isocalendar()
    return year, week


def _weeks(moments: list[datetime]) -> list[tuple[str, int]]:
    counts = Counter(_week(m) for m in moments)
    first = min(moments).astimezone(TZ).date()
    last = max(moments).astimezone(TZ).date()
    monday = first - timedelta(days=first.weekday())
    weeks: list[tuple[str, int]] = []
    while monday <= last:
        year, week, _ = monday.isocalendar()
        weeks.append((f"{year}-W{week:02d}", counts.get((year, week), 0)))
        monday += timedelta(days=7)
    return weeks[-MAX_WEEKS:]


def _components(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Union-find: the groups of filings joined by alike pairs."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return list(groups.values())


async def clusters(
    db: AsyncSession, who: Identity, filters: ClusterFilters, limit: int = 50
) -> ClusterReport:
    """Groups of alike filings submitted in the period (both of each pair), in this person's
    scope: a committee administrator's committee, or any (or the chosen) committee for a
    platform administrator. The largest first."""
    committee_id = filters.committee_id if who.role == Role.PLATFORM_ADMIN else committee_scope(who)
    since, until = _utc_midnight(filters.since), _utc_midnight(filters.until + timedelta(days=1))
    a, b = aliased(Case), aliased(Case)
    query = (
        select(LikenessPair.case_id, LikenessPair.other_id)
        .join(a, a.id == LikenessPair.case_id)
        .join(b, b.id == LikenessPair.other_id)
        .where(
            a.submitted_at >= since,
            a.submitted_at < until,
            b.submitted_at >= since,
            b.submitted_at < until,
        )
        .limit(MAX_EDGES + 1)
    )
    if committee_id is not None:
        query = query.where(a.committee_id == committee_id, b.committee_id == committee_id)
    edges = [(int(x), int(y)) for x, y in (await db.execute(query)).all()]
    truncated = len(edges) > MAX_EDGES
    groups = [g for g in _components(edges[:MAX_EDGES]) if len(g) >= filters.min_size]
    groups.sort(key=lambda g: (-len(g), min(g)))
    shown = groups[:limit]
    members = sorted({i for g in shown for i in g})
    info: dict[int, Any] = {}
    for chunk in _chunks(members):
        for row in await db.execute(
            select(
                Case.id,
                Case.number,
                Case.submitted_at,
                Case.claimant_id_index,
                Case.filer_id,
                Case.respondent_name,
                Case.agent_org,
                Case.agent_phone_index,
            ).where(Case.id.in_(chunk))
        ):
            info[row.id] = row
    result: list[Cluster] = []
    for group in shown:
        rows = sorted((info[i] for i in group if i in info), key=lambda r: (r.submitted_at, r.id))
        if not rows:
            continue
        moments = [r.submitted_at for r in rows]
        agents = {f"org:{r.agent_org}" for r in rows if r.agent_org} | {
            f"phone:{r.agent_phone_index}" for r in rows if r.agent_phone_index
        }
        result.append(
            Cluster(
                size=len(rows),
                claimants=len({claimant_key(r.claimant_id_index, r.filer_id) for r in rows}),
                firms=Counter(r.respondent_name for r in rows).most_common(),
                agents=len(agents),
                first=moments[0],
                last=moments[-1],
                weeks=_weeks(moments),
                cases=[ClusterCase(r.id, r.number, r.submitted_at) for r in rows],
            )
        )
    return ClusterReport(clusters=result, total=len(groups), truncated=truncated)


# -- display ----------------------------------------------------------------------------------


def passages(text: str, against: str) -> list[tuple[str, bool]]:
    """``text`` cut into runs, each marked when it lies in a shingle ``against`` has too: the
    copied passages, for the side-by-side view."""
    common = shingles(against)
    positions: list[int] = []  # of the characters that count for shingles (normalise)
    chars: list[str] = []
    for i, ch in enumerate(text):
        for c in normalise(ch):
            chars.append(c)
            positions.append(i)
    marked = [False] * len(text)
    clean = "".join(chars)
    spans = (
        [(0, len(clean))]
        if len(clean) <= SHINGLE
        else [(j, j + SHINGLE) for j in range(len(clean) - SHINGLE + 1)]
    )
    for start, end in spans:
        if clean[start:end] in common:
            for t in range(start, end):
                marked[positions[t]] = True
    # Punctuation and spaces inside a copied passage belong to it.
    counted = set(positions)
    for i in range(len(text)):
        if i not in counted:
            before = next((marked[j] for j in range(i - 1, -1, -1) if j in counted), False)
            after = next((marked[j] for j in range(i + 1, len(text)) if j in counted), False)
            marked[i] = before and after
    runs: list[tuple[str, bool]] = []
    for ch, mark in zip(text, marked, strict=True):
        if runs and runs[-1][1] == mark:
            runs[-1] = (runs[-1][0] + ch, mark)
        else:
            runs.append((ch, mark))
    return runs


async def committee_choices(db: AsyncSession) -> list[tuple[str, str]]:
    """(id, name) of every committee, for the platform administrator's filter."""
    rows = await db.execute(select(Committee.id, Committee.name).order_by(Committee.name))
    return [(str(row.id), row.name) for row in rows]
