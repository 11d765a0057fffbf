"""The dashboard's running totals (portal.analytics.rollup) against counting every case afresh,
on SQLite and PostgreSQL: after random filings, changes and deletions, folded or not, the two
dashboards agree for any range and filter; the triggers survive to the head revision; the
migration's backfill equals what the triggers built; folding at once from two sessions counts
each change once."""

from __future__ import annotations

import asyncio
import importlib.util
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, text

from portal.analytics import rollup, stats
from portal.analytics.rollup_models import CaseRollup, CaseRollupDelta
from portal.cases.models import Case
from portal.policy import Role
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone

CATEGORIES = ["credit_card", "small_loan", "insurance"]
OUTCOMES = [None, "settled", "failed", "withdrawn", "rejected", "ineligible"]
# Cases filed from October 2025 to April 2026; a China-time month starts at 16:00 UTC the day
# before, so times near that hour land on either side of a month's edge.
FIRST_DAY = date(2025, 10, 1)
DAYS = 212
MIGRATION = Path(__file__).parents[2] / "migrations/versions/20261204_0019_case_rollup.py"
# Columns every inserted case has alike (NOT NULL without a server default).
ROW_DEFAULTS: dict[str, Any] = {
    "filed_as": "self",
    "agent_org": "",
    "respondent_name": "",
    "outcomes": [],
    "facts": "",
    "eligibility": {},
    "triage_reasons": [],
    "requested_items": [],
    "firm_terms": "",
    "paused_working_days": 0,
    "filing_ip": "",
}


async def _world(app: Any) -> dict[str, Any]:
    committees = [await make_committee(app), await make_committee(app)]
    firms = [await make_firm(app) for _ in range(3)]
    mediators = {
        c.id: [(await make_user(app, Role.MEDIATOR, committee=c)).id for _ in range(2)]
        for c in committees
    }
    consumer = await make_user(app, Role.CONSUMER, phone="13900000078")
    await verify_phone(app, consumer)
    return {
        "committees": [c.id for c in committees],
        "firms": [f.id for f in firms],
        "mediators": mediators,
        "consumer": consumer,
    }


def _when(rng: random.Random) -> datetime:
    day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    if rng.random() < 0.3:  # on the edge of a China-time day (and so, sometimes, of a month)
        moment = datetime(day.year, day.month, day.day, 16, tzinfo=UTC)
        return moment - timedelta(seconds=rng.choice([1, 0, -1]) * rng.randint(0, 1))
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(86400)
    )


def _changes(rng: random.Random, world: dict[str, Any], committee_id: int) -> dict[str, Any]:
    """Random values for some of the counted columns of a case."""
    choices: dict[str, Any] = {
        "submitted_at": lambda: _when(rng) if rng.random() < 0.9 else None,
        "category": lambda: rng.choice(CATEGORIES),
        "respondent_firm_id": lambda: rng.choice([*world["firms"], None]),
        "mediator_id": lambda: rng.choice([*world["mediators"][committee_id], None]),
        "accepted_at": lambda: _when(rng) if rng.random() < 0.7 else None,
        "outcome": lambda: rng.choice(OUTCOMES),
        "handling_days": lambda: rng.choice([None, *range(1, 12)]),
        "amount_fen": lambda: rng.choice([None, rng.randrange(1, 10**7)]),
        "agreed_fen": lambda: rng.choice([None, rng.randrange(0, 10**6)]),
        "waived_fen": lambda: rng.choice([None, rng.randrange(0, 10**5)]),
        "firm_response": lambda: rng.choice([None, "agree", "dispute"]),
    }
    names = rng.sample(sorted(choices), rng.randint(1, 4))
    return {name: choices[name]() for name in names}


async def _insert(app: Any, rng: random.Random, world: dict[str, Any], n: int) -> None:
    now = datetime.now(UTC)
    rows = []
    for _ in range(n):
        committee_id = rng.choice(world["committees"])
        row = {
            **ROW_DEFAULTS,
            "committee_id": committee_id,
            "status": "in_mediation",
            "category": rng.choice(CATEGORIES),
            "filer_id": world["consumer"].id,
            "created_at": now,
            "updated_at": now,
            "submitted_at": _when(rng),
            "respondent_firm_id": rng.choice(world["firms"]),
        }
        row.update(_changes(rng, world, committee_id))
        rows.append(row)
    async with app.starlette.state.db() as db:
        await db.execute(insert(Case), rows)
        await db.commit()


async def _mutate(app: Any, rng: random.Random, world: dict[str, Any], n: int) -> None:
    """Change ``n`` random cases through the ORM (some moved to the other committee), delete a
    few, and insert a few more."""
    async with app.starlette.state.db() as db:
        ids = list(await db.scalars(select(Case.id)))
        for case_id in rng.sample(ids, min(n, len(ids))):
            case = await db.get(Case, case_id)
            assert case is not None
            if rng.random() < 0.1:
                case.committee_id = rng.choice(world["committees"])
                case.mediator_id = None
            for name, value in _changes(rng, world, case.committee_id).items():
                setattr(case, name, value)
            if rng.random() < 0.5:
                await db.commit()
        gone = rng.sample(ids, 3)
        await db.execute(delete(Case).where(Case.id.in_(gone)))
        await db.commit()
    await _insert(app, rng, world, 5)


def _query(rng: random.Random, world: dict[str, Any]) -> stats.StatsQuery:
    start = FIRST_DAY + timedelta(days=rng.randrange(-20, DAYS))
    if rng.random() < 0.4:
        start = start.replace(day=1)
    end = start + timedelta(days=rng.randrange(0, 240))
    if rng.random() < 0.4:
        end = (end.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return stats.StatsQuery(
        start,
        end,
        committee_id=rng.choice([None, None, *world["committees"]]),
        category=rng.choice(["", "", *CATEGORIES]),
        firm_id=rng.choice([None, None, None, *world["firms"]]),
    )


def _summary(board: stats.Dashboard) -> dict[str, Any]:
    found: dict[str, Any] = {"total": board.total}
    for name, groups in board.breakdowns.items():
        found[name] = {group.key: group.figures for group in groups}
    found["mediators"] = {row.user_id: (row.figures, row.open_cases) for row in board.mediators}
    return found


async def _agree(app: Any, rng: random.Random, world: dict[str, Any], queries: int) -> int:
    """Both ways of counting give the same dashboard for random queries (and the whole range),
    including the working days' median and 90th percentile of every group;
    the number of cases the whole range counts."""
    whole = stats.StatsQuery(FIRST_DAY - timedelta(days=40), date.today() + timedelta(days=2))
    async with app.starlette.state.db() as db:
        for query in [whole, *(_query(rng, world) for _ in range(queries))]:
            fast = await stats.dashboard(db, query)
            slow = await stats.dashboard(db, query, rollup=False)
            assert _summary(fast) == _summary(slow), query
        counted = (await stats.dashboard(db, whole)).total.received
    return counted


async def _filed(app: Any) -> int:
    async with app.starlette.state.db() as db:
        return int(await db.scalar(select(func.count()).where(Case.submitted_at.is_not(None))))


async def _fold_all(app: Any, batch: int) -> int:
    moved = 0
    while True:
        async with app.starlette.state.db() as db:
            done = await rollup.fold(db, batch)
        moved += done
        if done < batch:
            return moved


async def test_totals_agree_with_counting_every_case(app: Any) -> None:
    rng = random.Random(20261204)
    world = await _world(app)
    # One case through the real filing service: its trigger fires like any other.
    await make_case(app, world["consumer"], None)
    await _insert(app, rng, world, 150)
    assert await _agree(app, rng, world, 15) == await _filed(app)
    for round_ in range(4):
        await _mutate(app, rng, world, 40)
        if round_ % 2:  # folded in small batches; else read with every change still pending
            assert await _fold_all(app, batch=97) > 0
        assert await _agree(app, rng, world, 15) == await _filed(app)
    await _fold_all(app, batch=1000)
    async with app.starlette.state.db() as db:
        assert await db.scalar(select(func.count()).select_from(CaseRollupDelta)) == 0
        # Groups left without cases are removed, not kept as rows of zeros.
        assert await db.scalar(select(func.count()).where(CaseRollup.received <= 0)) == 0
    assert await _agree(app, rng, world, 15) == await _filed(app)


async def test_backfill_equals_the_triggers_totals(app: Any) -> None:
    rng = random.Random(7)
    world = await _world(app)
    await _insert(app, rng, world, 80)
    await _mutate(app, rng, world, 30)
    await _fold_all(app, batch=1000)
    key = (CaseRollup.kind, CaseRollup.month, CaseRollup.committee_id, CaseRollup.dim)
    columns = (*key, CaseRollup.days, CaseRollup.received, CaseRollup.claimed_fen)
    spec = importlib.util.spec_from_file_location("rollup_migration", MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    async with app.starlette.state.db() as db:
        built = sorted(tuple(r) for r in await db.execute(select(*columns)))
        assert built
        await db.execute(delete(CaseRollup))
        await db.execute(text(migration.backfill(db.get_bind().dialect.name)))
        await db.commit()
        # One change per group of cases alike, not per case.
        changes = await db.scalar(select(func.count()).select_from(CaseRollupDelta))
        assert 0 < changes < 3 * await _filed(app)
    await _fold_all(app, batch=1000)
    async with app.starlette.state.db() as db:
        assert sorted(tuple(r) for r in await db.execute(select(*columns))) == built


async def test_two_sessions_folding_at_once_count_each_change_once(app: Any) -> None:
    rng = random.Random(11)
    world = await _world(app)
    await _insert(app, rng, world, 120)
    await _mutate(app, rng, world, 60)

    async def fold() -> int:
        async with app.starlette.state.db() as db:
            return await rollup.fold(db, batch=200)

    async with app.starlette.state.db() as db:
        pending = await db.scalar(select(func.count()).select_from(CaseRollupDelta))
    moved = 0
    while True:
        done = await asyncio.gather(fold(), fold())
        moved += sum(done)
        if not any(done):
            break
    assert moved == pending
    assert await _agree(app, rng, world, 10) == await _filed(app)


async def test_the_triggers_are_there_at_head(app: Any) -> None:
    async with app.starlette.state.db() as db:
        if db.get_bind().dialect.name == "sqlite":
            statement = text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'cases'"
            )
        else:
            statement = text(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'cases'::regclass "
                "AND NOT tgisinternal"
            )
        names = set(await db.scalars(statement))
    assert {"case_rollup_insert", "case_rollup_delete"} <= names
    assert names & {"case_rollup_update", "case_rollup_update_old"}


async def test_the_portal_folds_changes_in_the_background(app: Any) -> None:
    world = await _world(app)
    await make_case(app, world["consumer"], None)
    loop = app.starlette.state.rollup
    assert loop.running
    loop.wake()
    for _ in range(100):
        async with app.starlette.state.db() as db:
            pending = await db.scalar(select(func.count()).select_from(CaseRollupDelta))
            stored = await db.scalar(select(func.sum(CaseRollup.received)))
        if not pending:
            break
        await asyncio.sleep(0.05)
    assert pending == 0
    assert stored == 3  # the case, by category, by firm and by mediator
