"""The oversight figures against hand-computed ones, on SQLite and PostgreSQL; each figure equals
what the staff case list shows for the same filters; real transitions record how cases end."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from portal.accounts.models import User
from portal.analytics import stats
from portal.cases import service as cases
from portal.cases.models import Case
from portal.errors import DomainError
from portal.exports import safe_cell
from portal.policy import Identity, Role
from tests.conftest import log_in
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone

# China time is UTC+8: 2026-02-28 17:00 UTC is already 1 March in Shanghai.
T = datetime


# (submitted UTC, committee, category, firm, mediator, outcome, working days, accepted,
#  firm answered, amount, agreed, waived)
ROWS: list[tuple[Any, ...]] = [
    (
        T(2026, 1, 5, 2, tzinfo=UTC),
        "a",
        "credit_card",
        "x",
        "m1",
        "settled",
        10,
        True,
        True,
        100_00,
        80_00,
        5_00,
    ),
    (
        T(2026, 1, 20, 2, tzinfo=UTC),
        "a",
        "credit_card",
        "x",
        "m1",
        "failed",
        20,
        True,
        False,
        200_00,
        None,
        None,
    ),
    (
        T(2026, 1, 31, 17, tzinfo=UTC),
        "a",
        "small_loan",
        "y",
        "m2",
        "settled",
        4,
        True,
        True,
        300_00,
        300_00,
        0,
    ),
    (
        T(2026, 2, 3, 2, tzinfo=UTC),
        "a",
        "small_loan",
        "x",
        "m2",
        "settled",
        7,
        True,
        True,
        400_00,
        150_00,
        50_00,
    ),
    (
        T(2026, 2, 10, 2, tzinfo=UTC),
        "a",
        "credit_card",
        "y",
        None,
        "withdrawn",
        None,
        False,
        False,
        500_00,
        None,
        None,
    ),
    (
        T(2026, 2, 28, 17, tzinfo=UTC),
        "a",
        "credit_card",
        "x",
        "m1",
        None,
        None,
        True,
        False,
        600_00,
        None,
        None,
    ),
    (
        T(2026, 3, 2, 2, tzinfo=UTC),
        "b",
        "credit_card",
        "x",
        "m3",
        "settled",
        30,
        True,
        True,
        700_00,
        700_00,
        0,
    ),
    (
        T(2026, 3, 3, 2, tzinfo=UTC),
        "b",
        "credit_card",
        "x",
        None,
        "rejected",
        None,
        False,
        False,
        800_00,
        None,
        None,
    ),
]
QUERY_ALL = stats.StatsQuery(date(2026, 1, 1), date(2026, 3, 31))


async def _seed(app: Any) -> dict[str, Any]:
    committee_a = await make_committee(app, region="上海市普陀区")
    committee_b = await make_committee(app, region="福建省泉州市")
    firms = {"x": await make_firm(app), "y": await make_firm(app)}
    people = {
        "admin_a": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee_a),
        "admin_b": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee_b),
        "platform": await make_user(app, Role.PLATFORM_ADMIN),
        "m1": await make_user(app, Role.MEDIATOR, committee=committee_a),
        "m2": await make_user(app, Role.MEDIATOR, committee=committee_a),
        "m3": await make_user(app, Role.MEDIATOR, committee=committee_b),
        "consumer": await make_user(app, Role.CONSUMER, phone="13900000077"),
    }
    await verify_phone(app, people["consumer"])
    committees = {"a": committee_a, "b": committee_b}
    state = app.starlette.state
    for row in ROWS:
        (when, c, category, f, m, outcome, days, accepted, answered, amount, agreed, waived) = row
        case = await make_case(
            app,
            people["consumer"],
            firms[f],
            category=category,
        )
        async with state.db() as db:
            await db.execute(
                update(Case)
                .where(Case.id == case.id)
                .values(
                    committee_id=committees[c].id,
                    submitted_at=when,
                    accepted_at=when if accepted else None,
                    mediator_id=people[m].id if m else None,
                    outcome=outcome,
                    status=outcome or "in_mediation",
                    handling_days=days,
                    firm_response="agree" if answered else None,
                    amount_fen=amount,
                    agreed_fen=agreed,
                    waived_fen=waived,
                )
            )
            await db.commit()
    return {"committees": committees, "firms": firms, "people": people}


async def _board(app: Any, query: stats.StatsQuery) -> stats.Dashboard:
    async with app.starlette.state.db() as db:
        return await stats.dashboard(db, query)


async def test_dashboard_figures_equal_hand_computed_ones(app: Any) -> None:
    world = await _seed(app)
    board = await _board(app, QUERY_ALL)
    total = board.total
    assert (total.received, total.accepted, total.settled, total.failed) == (8, 6, 4, 1)
    assert (total.withdrawn, total.rejected) == (1, 1)
    assert total.success_rate == pytest.approx(4 / 5)
    assert total.claimed_fen == 3_600_00
    assert (total.agreed_fen, total.waived_fen) == (1_230_00, 55_00)
    # Working days of settled and failed cases: 4, 7, 10, 20, 30.
    assert total.mean_days == pytest.approx(71 / 5)
    assert total.median_days == 10
    assert total.p90_days == 30
    # Accepted cases against a firm: 6; answered: 4.
    assert total.response_rate == pytest.approx(4 / 6)

    months = {g.key: g.figures for g in board.breakdowns["month"]}
    # 2026-01-31 17:00 UTC is 1 February in China; 2026-02-28 17:00 UTC is 1 March.
    assert {k: f.received for k, f in months.items()} == {"2026-01": 2, "2026-02": 3, "2026-03": 3}
    assert months["2026-02"].median_days == 5.5  # 4 and 7
    assert months["2026-01"].success_rate == pytest.approx(1 / 2)

    firms = {g.key: g.figures for g in board.breakdowns["firm"]}
    x, y = world["firms"]["x"].id, world["firms"]["y"].id
    assert (firms[x].received, firms[x].settled, firms[x].failed) == (6, 3, 1)
    assert (firms[y].received, firms[y].settled, firms[y].withdrawn) == (2, 1, 1)
    assert firms[x].response_rate == pytest.approx(3 / 5)

    regions = {g.key: g.figures.received for g in board.breakdowns["region"]}
    assert regions == {"上海市普陀区": 6, "福建省泉州市": 2}
    categories = {g.key: g.figures.received for g in board.breakdowns["category"]}
    assert categories == {"credit_card": 6, "small_loan": 2}

    mediators = {row.user_id: row for row in board.mediators}
    m1 = mediators[world["people"]["m1"].id]
    assert (m1.figures.received, m1.figures.settled, m1.figures.failed) == (3, 1, 1)
    assert m1.open_cases == 1  # the one still in mediation
    assert m1.figures.median_days == 15  # 10 and 20

    # One committee, one category, one firm.
    only_a = await _board(
        app, stats.StatsQuery(date(2026, 1, 1), date(2026, 3, 31), world["committees"]["a"].id)
    )
    assert (only_a.total.received, only_a.total.settled) == (6, 3)
    assert {row.user_id for row in only_a.mediators} == {
        world["people"]["m1"].id,
        world["people"]["m2"].id,
    }
    loans = await _board(
        app, stats.StatsQuery(date(2026, 1, 1), date(2026, 3, 31), category="small_loan")
    )
    assert (loans.total.received, loans.total.agreed_fen) == (2, 450_00)
    # The range is by China date: 1 February to 28 February leaves out the 1 March filing.
    february = await _board(app, stats.StatsQuery(date(2026, 2, 1), date(2026, 2, 28)))
    assert february.total.received == 3


async def test_every_figure_equals_the_case_list_it_links_to(app: Any) -> None:
    world = await _seed(app)
    board = await _board(app, QUERY_ALL)
    platform = world["people"]["platform"]
    who = Identity(platform.id, Role.PLATFORM_ADMIN)
    state = app.starlette.state
    checked = 0
    for breakdown in ("month", "category", "firm", "committee", "mediator"):
        for group in board.breakdowns[breakdown]:
            if not group.list_params:
                continue
            for outcome, expected in (
                ("", group.figures.received),
                ("accepted", group.figures.accepted),
                ("settled", group.figures.settled),
                ("failed", group.figures.failed),
                ("withdrawn", group.figures.withdrawn),
            ):
                params = group.list_params
                filters = cases.CaseFilters(
                    category=params.get("category", ""),
                    firm_id=int(params["firm"]) if "firm" in params else None,
                    mediator_id=int(params["mediator"]) if "mediator" in params else None,
                    committee_id=int(params["committee"]) if "committee" in params else None,
                    submitted_from=date.fromisoformat(params["from"]),
                    submitted_to=date.fromisoformat(params["to"]),
                    outcome=outcome,
                )
                async with state.db() as db:
                    _, total = await cases.list_cases(db, state.vault, who, filters)
                assert total == expected, (breakdown, group.key, outcome)
                checked += 1
    assert checked > 40


async def test_real_transitions_record_how_a_case_ended(app: Any) -> None:
    committee = await make_committee(app)
    firm = await make_firm(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee)
    consumer = await make_user(app, Role.CONSUMER, phone="13900000078")
    await verify_phone(app, consumer)
    state = app.starlette.state
    failing = await make_case(app, consumer, firm, status="assigned", mediator_id=mediator.id)
    withdrawn = await make_case(app, consumer, firm, status="accepted")
    async with state.db() as db:
        actor = await db.get(User, mediator.id)
        case = await db.get(Case, failing.id)
        assert actor is not None and case is not None
        await cases.apply_transition(db, case, actor, "start_mediation")
        assert case.outcome is None
        await cases.apply_transition(db, case, actor, "fail", "no agreement")
        await cases.apply_transition(db, case, actor, "transfer")
    async with state.db() as db:
        case = await db.get(Case, failing.id)
        assert case is not None
        assert (case.status, case.outcome, case.handling_days) == (
            "transferred_to_litigation",
            "failed",
            0,
        )
        assert case.outcome_at is not None
        claimant = await db.get(User, consumer.id)
        other = await db.get(Case, withdrawn.id)
        assert claimant is not None and other is not None
        await cases.apply_transition(db, other, claimant, "withdraw", "changed my mind")
    async with state.db() as db:
        other = await db.get(Case, withdrawn.id)
        assert other is not None and other.outcome == "withdrawn"
    async with state.db() as db:
        board = await stats.dashboard(
            db, stats.StatsQuery(date(2000, 1, 1), cases.today_in_china(), committee.id)
        )
    assert (board.total.received, board.total.failed, board.total.withdrawn) == (2, 1, 1)
    assert board.total.success_rate == 0
    assert admin.user.committee_id == committee.id


def test_filters_are_checked() -> None:
    admin = Identity(1, Role.COMMITTEE_ADMIN, committee_id=5)
    platform = Identity(2, Role.PLATFORM_ADMIN)
    today = date(2026, 6, 1)
    query = stats.parse_query({}, admin, today)
    assert query.committee_id == 5 and query.end == today and query.start == date(2025, 7, 1)
    for params in (
        {"from": "2026-05-01", "to": "2026-04-01"},  # start after end
        {"from": "1999-12-31"},
        {"to": "2099-01-01"},
        {"from": "2026-02-30"},
        {"from": "x' OR 1=1 --"},
        {"committee": "1 OR 1=1"},
        {"committee": "6"},  # another committee
        {"category": "<script>"},
        {"firm": "-1"},
        {"from": "2010-01-01", "to": "2026-01-01"},  # more than ten years
    ):
        with pytest.raises(DomainError):
            stats.parse_query(params, admin, today)
    assert stats.parse_query({"committee": "6"}, platform, today).committee_id == 6


def test_formula_cells_are_neutralised() -> None:
    assert safe_cell('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert safe_cell("+1") == "'+1" and safe_cell("@SUM(A1)") == "'@SUM(A1)"
    assert safe_cell("-5") == "'-5" and safe_cell("正常") == "正常" and safe_cell(5) == 5


async def test_dashboard_page_exports_and_bad_filters(app: Any, client: httpx.AsyncClient) -> None:
    world = await _seed(app)
    admin = world["people"]["admin_a"]
    await log_in(client, admin.login, admin.password)
    page = await client.get("/admin/stats?from=2026-01-01&to=2026-03-31")
    assert page.status_code == 200
    assert 'data-testid="kpi-received"' in page.text and "<svg" in page.text
    # Committee A only: six cases, and the link goes to the same list.
    assert ">6</a>" in page.text
    bad = await client.get("/admin/stats?from=2026-03-01&to=2026-01-01")
    assert bad.status_code == 400 and 'data-testid="stats-error"' in bad.text
    other = await client.get(f"/admin/stats?committee={world['committees']['b'].id}")
    assert other.status_code == 400

    exported = await client.get(
        "/admin/stats/export?breakdown=month&format=csv&from=2026-01-01&to=2026-03-31"
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [line[0] for line in lines[1:]] == ["2026-01", "2026-02", "2026-03", "全部"]
    assert [line[1] for line in lines[1:]] == ["2", "3", "1", "6"]
    workbook = await client.get(
        "/admin/stats/export?breakdown=mediator&format=xlsx&from=2026-01-01&to=2026-03-31"
    )
    assert workbook.status_code == 200 and workbook.content[:2] == b"PK"
    assert (await client.get("/admin/stats/export?breakdown=users&format=csv")).status_code == 400
    assert (await client.get("/admin/stats/export?breakdown=month&format=exe")).status_code == 400


async def test_parties_and_mediators_cannot_see_the_dashboard(
    app: Any, client: httpx.AsyncClient
) -> None:
    world = await _seed(app)
    await log_in(client, world["people"]["m1"].login, world["people"]["m1"].password)
    assert (await client.get("/admin/stats")).status_code == 404
    assert (await client.get("/admin/stats/export")).status_code == 404
    async with app.starlette.state.db() as db:
        assert await db.scalar(select(Case.id).limit(1)) is not None
