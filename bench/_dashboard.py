"""The dashboard part of bench/oversight.py: seed N cases in bulk into a migrated database and
time the whole dashboard (every figure, every breakdown) beside a bare scan of the same rows."""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

CATEGORIES = [
    "credit_card",
    "small_loan",
    "small_business_loan",
    "personal_business_loan",
    "insurance",
    "bank_wealth",
    "securities_advisory",
    "consumer_goods",
    "other",
]
OUTCOMES = [
    (None, 20),
    ("settled", 50),
    ("failed", 14),
    ("withdrawn", 8),
    ("rejected", 5),
    ("ineligible", 3),
]
BATCH = 20_000
# Columns every generated case has alike (NOT NULL without a server default).
ROW_DEFAULTS: dict[str, Any] = {
    "filed_as": "self",
    "agent_org": "",
    "respondent_name": "",
    "outcomes": "[]",
    "facts": "",
    "eligibility": "{}",
    "triage_reasons": "[]",
    "requested_items": "[]",
    "firm_terms": "",
    "paused_working_days": 0,
    "filing_ip": "",
}
VARYING = (
    "committee_id",
    "status",
    "category",
    "filer_id",
    "respondent_firm_id",
    "amount_fen",
    "submitted_at",
    "accepted_at",
    "mediator_id",
    "firm_response",
    "outcome",
    "outcome_at",
    "handling_days",
    "agreed_fen",
    "waived_fen",
    "created_at",
    "updated_at",
)


def _sqlite(value: Any) -> Any:
    """As SQLAlchemy stores an aware UTC datetime in SQLite: naive UTC text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


async def seed(database_url: str, n_cases: int, rng: random.Random) -> dict[str, Any]:
    """Committees, firms and mediators through plain inserts, then ``n_cases`` ended or open
    cases over two years, in batches; then ANALYZE. Returns what was made."""
    from sqlalchemy import insert, select, text

    from portal.accounts.models import User
    from portal.analytics import rollup
    from portal.db import create_engine, create_sessionmaker
    from portal.orgs.models import Committee, Firm

    engine = create_engine(database_url)
    pg = database_url.startswith("postgresql")
    started = time.perf_counter()
    now = datetime.now(UTC)
    try:
        async with engine.connect() as conn:
            if not pg:
                await conn.exec_driver_sql("PRAGMA synchronous=OFF")
            regions = ["上海市普陀区", "福建省泉州市", "山东省青岛市", "北京市", "广东省深圳市"]
            await conn.execute(
                insert(Committee.__table__),
                [
                    {
                        "name": f"调解委员会{i}",
                        "region": regions[i],
                        "categories": CATEGORIES,
                        "case_prefix": f"B{i}",
                    }
                    for i in range(5)
                ],
            )
            committee_ids = list(await conn.scalars(select(Committee.id)))
            await conn.execute(
                insert(Firm.__table__),
                [
                    {
                        "name": f"测试金融机构{i}",
                        "credit_code": f"91310000MA{i:08d}",
                        "industry": "bank",
                    }
                    for i in range(200)
                ],
            )
            firm_ids = list(await conn.scalars(select(Firm.id)))
            users = []
            for i in range(50):
                users.append(
                    {
                        "role": "mediator",
                        "display_name": f"调解员{i}",
                        "password_hash": "x",
                        "committee_id": committee_ids[i % 5],
                        "email_index": f"bench-mediator-{i}",
                        "locale": "zh_CN",
                        "created_at": now,
                    }
                )
            users.append(
                {
                    "role": "consumer",
                    "committee_id": None,
                    "email_index": "bench-consumer",
                    "display_name": "申请人",
                    "password_hash": "x",
                    "locale": "zh_CN",
                    "created_at": now,
                }
            )
            await conn.execute(insert(User.__table__), users)
            mediators: dict[int, list[int]] = {}
            for uid, cid in await conn.execute(
                select(User.id, User.committee_id).where(User.role == "mediator")
            ):
                mediators.setdefault(cid, []).append(uid)
            filer = await conn.scalar(select(User.id).where(User.role == "consumer"))
            await conn.commit()
            outcomes = [o for o, _ in OUTCOMES]
            weights = [w for _, w in OUTCOMES]
            columns = list(ROW_DEFAULTS) + list(VARYING)
            raw = await conn.get_raw_connection()
            for start in range(0, n_cases, BATCH):
                rows = []
                for _ in range(min(BATCH, n_cases - start)):
                    submitted = now - timedelta(seconds=rng.uniform(3600, 730 * 86400))
                    committee = rng.choice(committee_ids)
                    outcome = rng.choices(outcomes, weights)[0]
                    accepted = outcome not in ("rejected", "ineligible") and rng.random() < 0.95
                    mediated = accepted and outcome in (None, "settled", "failed")
                    amount = int(rng.lognormvariate(10, 1.2)) * 100
                    agreed = int(amount * rng.uniform(0.3, 1)) if outcome == "settled" else None
                    varying = (
                        committee,
                        outcome or "in_mediation",
                        rng.choice(CATEGORIES),
                        filer,
                        rng.choice(firm_ids),
                        amount,
                        submitted,
                        submitted + timedelta(days=2) if accepted else None,
                        rng.choice(mediators[committee]) if mediated else None,
                        "agree" if accepted and rng.random() < 0.85 else None,
                        outcome,
                        submitted + timedelta(days=20) if outcome else None,
                        rng.randint(1, 40) if outcome in ("settled", "failed") else None,
                        agreed,
                        int(amount * 0.05) if agreed else None,
                        submitted,
                        now,
                    )
                    rows.append((*ROW_DEFAULTS.values(), *varying))
                if pg:
                    await raw.driver_connection.copy_records_to_table(
                        "cases", records=rows, columns=columns
                    )
                else:
                    await conn.exec_driver_sql(
                        f"INSERT INTO cases ({', '.join(columns)}) "  # noqa: S608 (constant names)
                        f"VALUES ({', '.join('?' * len(columns))})",
                        [tuple(_sqlite(v) for v in row) for row in rows],
                    )
                await conn.commit()
                print(f"  seeded {start + len(rows):,} cases", end="\r", flush=True)
            print()
        async with engine.connect() as conn:
            if pg:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE")
            else:
                await conn.exec_driver_sql("ANALYZE")
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                await conn.commit()
            total = await conn.scalar(text("SELECT count(*) FROM cases"))
        seeded = time.perf_counter()
        # What the portal's RollupLoop does in the background: fold the changes the triggers
        # appended while the cases were inserted into the running totals.
        sessions = create_sessionmaker(engine)
        while True:
            async with sessions() as db:
                moved = await rollup.fold(db)
            print(f"  folded {moved:,} changes", end="\r", flush=True)
            if moved < 50_000:
                break
        print()
        async with engine.connect() as conn:
            if pg:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                # As autovacuum would soon: the folded changes leave dead rows behind.
                await conn.exec_driver_sql("VACUUM ANALYZE case_rollup, case_rollup_delta")
            else:
                await conn.exec_driver_sql("ANALYZE")
                await conn.commit()
            rows = await conn.scalar(text("SELECT count(*) FROM case_rollup"))
    finally:
        await engine.dispose()
    return {
        "cases": total,
        "seconds": seeded - started,
        "fold_seconds": time.perf_counter() - seeded,
        "rollup_rows": rows,
    }


async def measure(database_url: str, runs: int = 5) -> dict[str, Any]:
    """The whole dashboard over every case (two years, all committees), ``runs`` times after
    one warm-up, beside ``SELECT count(*), sum(amount_fen) FROM cases`` (a bare scan) and the
    same dashboard counted from every case instead of the running totals."""
    from sqlalchemy import text

    from portal.analytics import stats
    from portal.db import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    today = datetime.now(UTC).date()
    query = stats.StatsQuery(date(today.year - 3, 1, 1), today)
    dashboard_s: list[float] = []
    afresh_s: list[float] = []
    scan_s: list[float] = []
    figures = None
    try:
        for i in range(runs + 1):
            async with sessions() as db:
                t0 = time.perf_counter()
                board = await stats.dashboard(db, query)
                t1 = time.perf_counter()
                await db.execute(text("SELECT count(*), sum(amount_fen) FROM cases"))
                t2 = time.perf_counter()
                afresh = await stats.dashboard(db, query, rollup=False)
                t3 = time.perf_counter()
            assert afresh.total == board.total, "the running totals disagree with the cases"
            if i:
                dashboard_s.append(t1 - t0)
                scan_s.append(t2 - t1)
                afresh_s.append(t3 - t2)
            figures = board.total
    finally:
        await engine.dispose()
    assert figures is not None
    return {
        "received": figures.received,
        "dashboard_median": statistics.median(dashboard_s),
        "dashboard_max": max(dashboard_s),
        "scan_median": statistics.median(scan_s),
        "afresh_median": statistics.median(afresh_s),
    }
