"""Case numbering under concurrency, working-day deadlines, triage, assignment, timelines."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import select

from portal.accounts.models import User
from portal.cases import service as cases
from portal.cases.lifecycle import replay
from portal.cases.models import Case, CaseCounter, CaseEvent
from portal.errors import DomainError
from portal.orgs import service as orgs
from portal.policy import Role
from tests.factories import (
    make_case,
    make_committee,
    make_draft,
    make_firm,
    make_user,
    verify_phone,
)


async def test_concurrent_filings_get_unique_gap_free_numbers(app: Any, db_url: str) -> None:
    """Twenty drafts submitted at the same moment: twenty numbers, 1 to 20, no gap."""
    committee = await make_committee(app, prefix="QZ")
    firm = await make_firm(app)
    drafts = []
    for n in range(20):
        person = await make_user(app, Role.CONSUMER, phone=f"1370000{n:04d}")
        await verify_phone(app, person)
        drafts.append((person, await make_draft(app, person, firm)))
    state = app.starlette.state

    async def submit(person: Any, draft: Case) -> str:
        for attempt in range(50):
            try:
                async with state.db() as db:
                    user = await db.get(User, person.id)
                    case = await db.get(Case, draft.id)
                    assert user is not None and case is not None
                    done = await cases.submit_case(db, state.vault, case, user)
                    return done.number or ""
            except Exception as exc:  # SQLite: "database is locked" under contention; retry
                if "locked" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.05)
        raise AssertionError("unreachable")

    numbers = await asyncio.gather(*(submit(p, d) for p, d in drafts))
    year = cases.today_in_china().year
    assert sorted(numbers) == [f"QZ-{year}-{n:06d}" for n in range(1, 21)]
    async with state.db() as db:
        counter = await db.get(CaseCounter, (committee.id, year))
    assert counter is not None and counter.last == 20


async def test_a_failed_filing_gives_its_number_back(app: Any) -> None:
    await make_committee(app, prefix="GB")
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone="13500000000")
    draft = await make_draft(app, person, firm)  # phone not verified: submission refused
    state = app.starlette.state
    async with state.db() as db:
        user = await db.get(User, person.id)
        case = await db.get(Case, draft.id)
        assert user and case
        with pytest.raises(DomainError):
            await cases.submit_case(db, state.vault, case, user)
    await verify_phone(app, person)
    async with state.db() as db:
        user = await db.get(User, person.id)
        case = await db.get(Case, draft.id)
        assert user and case
        done = await cases.submit_case(db, state.vault, case, user)
    assert done.number and done.number.endswith("-000001")


async def test_accepting_sets_working_day_deadlines_and_triage(app: Any) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone="13500000001")
    await verify_phone(app, person)
    small = await make_case(app, person, firm, status="accepted", amount_fen=300_000)
    big = await make_case(
        app,
        person,
        firm,
        status="accepted",
        amount_fen=90_000_000,
        id_number="110105194912310029"[:17] + "X",
    )
    state = app.starlette.state
    async with state.db() as db:
        calendar = await cases.load_calendar(db)
    accepted = cases.today_in_china()
    assert small.complexity == "simple" and big.complexity == "complex"
    assert small.firm_response_due == calendar.add_working_days(accepted, 5)
    assert small.close_due == calendar.add_working_days(accepted, 15)
    assert big.close_due == calendar.add_working_days(accepted, 30)
    assert any("above the simple-case limit" in r[0] for r in big.triage_reasons)
    assert admin  # the committee's administrator accepted both


async def test_requesting_material_after_acceptance_pauses_the_clock(app: Any) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone="13500000002")
    await verify_phone(app, person)
    case = await make_case(app, person, firm, status="accepted")
    state = app.starlette.state
    async with state.db() as db:
        staff = await db.get(User, admin.id)
        claimant = await db.get(User, person.id)
        case = await db.get(Case, case.id)
        assert staff and claimant and case
        due = case.close_due
        with pytest.raises(DomainError):
            await cases.request_material(db, case, staff, [], "")
        await cases.request_material(db, case, staff, ["payment_records"], "请提供转账记录")
        assert case.paused_at is not None and case.status == "accepted"
        # Pretend the claimant took ten calendar days (a fortnight of working days less weekends).
        case.paused_at = case.paused_at.replace(year=case.paused_at.year) - __import__(
            "datetime"
        ).timedelta(days=10)
        await db.commit()
        await cases.provide_material(db, case, claimant, "已上传")
        calendar = await cases.load_calendar(db)
        paused = case.paused_working_days
        assert paused >= 6
        assert due is not None and case.close_due == calendar.add_working_days(due, paused)
        assert case.paused_at is None and case.requested_items == []


async def test_assignment_excludes_tied_mediators_and_ranks_by_specialty(app: Any) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app)
    tied = await make_user(app, Role.MEDIATOR, committee=committee, name="有关联")
    expert = await make_user(app, Role.MEDIATOR, committee=committee, name="专家")
    await make_user(app, Role.MEDIATOR, committee=committee, name="新手")
    state = app.starlette.state
    async with state.db() as db:
        _, profile = await orgs.get_mediator(db, expert.id)
        await orgs.update_mediator_profile(
            db, admin.id, profile, specialties=["credit_card"], grade="senior"
        )
        _, profile = await orgs.get_mediator(db, tied.id)
        await orgs.update_mediator_profile(
            db, admin.id, profile, specialties=["credit_card"], grade="senior"
        )
        await orgs.declare_tie(db, tied.id, profile, firm_id=firm.id, kind="shareholder", note="")
    person = await make_user(app, Role.CONSUMER, phone="13500000003")
    await verify_phone(app, person)
    case = await make_case(app, person, firm, status="accepted")
    async with state.db() as db:
        case = await db.get(Case, case.id)
        staff = await db.get(User, admin.id)
        assert case and staff
        ranked = await cases.suggest_mediators(db, case)
        assert ranked[0].mediator.id == expert.id
        assert ranked[-1].mediator.id == tied.id and ranked[-1].excluded is not None
        with pytest.raises(DomainError):
            await cases.assign_mediator(db, case, staff, tied.id)
        await cases.assign_mediator(db, case, staff, expert.id)
        steps = [
            (e.from_status, e.to_status)
            for e in await db.scalars(
                select(CaseEvent)
                .where(CaseEvent.case_id == case.id, CaseEvent.kind == "transition")
                .order_by(CaseEvent.id)
            )
        ]
    assert replay(steps[1:]) == case.status == "assigned"


async def test_recusal_granted_with_a_new_mediator(app: Any) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    first = await make_user(app, Role.MEDIATOR, committee=committee)
    second = await make_user(app, Role.MEDIATOR, committee=committee)
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone="13500000004")
    await verify_phone(app, person)
    case = await make_case(app, person, firm, status="assigned", mediator_id=first.id)
    state = app.starlette.state
    async with state.db() as db:
        case = await db.get(Case, case.id)
        claimant, staff = await db.get(User, person.id), await db.get(User, admin.id)
        assert case and claimant and staff
        with pytest.raises(DomainError):
            await cases.request_recusal(db, case, claimant, " ")
        await cases.request_recusal(db, case, claimant, "调解员曾在该公司任职")
        with pytest.raises(DomainError):
            await cases.request_recusal(db, case, claimant, "再次申请")
        with pytest.raises(DomainError):
            await cases.decide_recusal(
                db, case, staff, grant=True, note="", new_mediator_id=first.id
            )
        await cases.decide_recusal(
            db, case, staff, grant=True, note="同意", new_mediator_id=second.id
        )
        assert case.mediator_id == second.id and case.status == "assigned"
        assert await cases.pending_recusal(db, case) is None


async def test_staff_search_finds_chinese_text(app: Any) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app, name="华夏消费金融")
    person = await make_user(app, Role.CONSUMER, phone="13500000005")
    await verify_phone(app, person)
    one = await make_case(
        app, person, firm, facts="投资顾问承诺保本收益，实际亏损百分之三十。", name="王小明"
    )
    two = await make_case(
        app, person, firm, facts="信用卡年费未经同意扣收。", id_number="11010519491231002X"
    )
    state = app.starlette.state
    who = cases.Identity(user_id=admin.id, role=Role.COMMITTEE_ADMIN, committee_id=committee.id)
    async with state.db() as db:

        async def search(q: str) -> set[int]:
            rows, _ = await cases.list_cases(db, state.vault, who, cases.CaseFilters(q=q))
            return {c.id for c in rows}

        assert await search("承诺保本") == {one.id}
        assert await search("年费") == {two.id}
        assert await search("王小明") == {one.id}  # exact name through the blind index
        assert await search(one.number or "") == {one.id}
        assert await search((one.number or "").lower()) == {one.id}  # Latin: any case
        assert await search("华夏") == {one.id, two.id}
        assert await search("不存在的词") == set()
    assert re.fullmatch(r"C[A-Z]{3}-\d{4}-00000[12]", one.number or "")


async def test_list_counts_up_to_the_cap_and_pages_by_id(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts stop at COUNT_CAP + 1; pages, sorts and short queries still find the right cases."""
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app, name="东方小额贷款")
    person = await make_user(app, Role.CONSUMER, phone="13500000006")
    await verify_phone(app, person)
    made = [
        await make_case(
            app, person, firm, facts=f"第{i}笔借款提前还款被收取违约金。", amount_fen=amount
        )
        for i, amount in enumerate([300_00, 100_00, 200_00, 400_00])
    ]
    state = app.starlette.state
    who = cases.Identity(user_id=admin.id, role=Role.COMMITTEE_ADMIN, committee_id=committee.id)
    monkeypatch.setattr(cases, "COUNT_CAP", 2)
    async with state.db() as db:

        async def listing(**filters: Any) -> tuple[list[int], int]:
            rows, total = await cases.list_cases(
                db, state.vault, who, cases.CaseFilters(per_page=2, **filters)
            )
            return [row.id for row in rows], total

        newest_first = [c.id for c in reversed(made)]
        assert await listing() == (newest_first[:2], 3)  # 4 cases, counted as "more than 2"
        assert await listing(page=2) == (newest_first[2:], 3)
        assert await listing(q="违约金") == (newest_first[:2], 3)
        assert await listing(q="违约金", page=2) == (newest_first[2:], 3)
        assert await listing(q="还款") == (newest_first[:2], 3)  # two characters: pairs
        # A search sorts its newest COUNT_CAP + 1 matches; a list sorts every case.
        assert await listing(q="还款", sort="-amount") == ([made[3].id, made[2].id], 3)
        assert await listing(sort="-amount") == ([made[3].id, made[0].id], 3)
        assert await listing(q="东") == (newest_first[:2], 3)  # one character: firm name
        assert await listing(q="西") == ([], 0)
        assert await listing(q="100%_") == ([], 0)  # LIKE wildcards are literal
        assert await listing(q="第2笔") == ([made[2].id], 1)
        # PostgreSQL searches the newest ids first, then the rest: the seam changes nothing.
        for recent in (1, 2, 3):
            monkeypatch.setattr(cases, "RECENT_SLICE", recent)
            assert await listing(q="违约金") == (newest_first[:2], 3)
            assert await listing(q="违约金", page=2) == (newest_first[2:], 3)
            assert await listing(q="第1笔") == ([made[1].id], 1)
            assert await listing(q="DFXD") == ([], 0)  # Latin letters: case-blind
