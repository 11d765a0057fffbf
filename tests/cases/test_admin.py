"""Committee triage rules and deadlines; filings against unregistered firms."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from portal.cases.models import Case, CaseRules
from portal.policy import Role
from tests.conftest import log_in, post_form
from tests.factories import credit_code, make_case, make_committee, make_user, verify_phone


async def test_rules_edited_and_applied_at_acceptance(app: Any, client: httpx.AsyncClient) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    await log_in(client, admin.login, admin.password)
    page = await client.get(f"/admin/committees/{committee.id}/rules")
    assert page.status_code == 200 and 'value="50000.00"' in page.text
    good = {
        "simple_max_amount": "100000",
        "simple_categories": ["credit_card"],
        "firm_response_days": "3",
        "simple_close_days": "10",
        "complex_close_days": "20",
    }
    for bad, field in [
        ({"simple_max_amount": "-5"}, "simple_max_amount"),
        ({"firm_response_days": "0"}, "firm_response_days"),
        ({"simple_close_days": "abc"}, "simple_close_days"),
        ({"simple_close_days": "40"}, "simple_close_days"),
        ({"simple_categories": ["lottery"]}, "simple_categories"),
    ]:
        response = await post_form(
            client, f"/admin/committees/{committee.id}/rules", {**good, **bad}
        )
        assert response.status_code == 400, bad
        assert f'id="f-{field}-error"' in response.text or field in response.text
    async with app.starlette.state.db() as db:
        assert await db.get(CaseRules, committee.id) is None
    saved = await post_form(client, f"/admin/committees/{committee.id}/rules", good)
    assert saved.status_code == 303
    person = await make_user(app, Role.CONSUMER, phone="13400000000")
    await verify_phone(app, person)
    case = await make_case(app, person, None, status="accepted", amount_fen=9_000_000)
    assert case.complexity == "simple"  # ¥90,000 is within the new ¥100,000 limit
    async with app.starlette.state.db() as db:
        calendar = await __import__("portal.workdays.service", fromlist=["x"]).load_calendar(db)
    from portal.cases.service import today_in_china

    assert case.firm_response_due == calendar.add_working_days(today_in_china(), 3)
    assert case.close_due == calendar.add_working_days(today_in_china(), 10)


async def test_registering_a_firm_links_earlier_filings(
    app: Any, client: httpx.AsyncClient
) -> None:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    person = await make_user(app, Role.CONSUMER, phone="13400000001")
    await verify_phone(app, person)
    code = credit_code()
    case = await make_case(app, person, None)
    async with app.starlette.state.db() as db:
        row = await db.get(Case, case.id)
        assert row is not None
        row.respondent_credit_code = code
        await db.commit()
    await log_in(client, admin.login, admin.password)
    page = await client.get(f"/cases/{case.id}")
    assert f"credit_code={code}" in page.text  # "register this firm and invite it"
    prefilled = await client.get(f"/admin/firms?name=未登记公司&credit_code={code}")
    assert f'value="{code}"' in prefilled.text
    done = await post_form(
        client, "/admin/firms", {"name": "未登记公司", "credit_code": code, "industry": "lending"}
    )
    assert done.status_code == 303
    async with app.starlette.state.db() as db:
        linked = await db.scalar(select(Case.respondent_firm_id).where(Case.id == case.id))
    assert linked is not None
