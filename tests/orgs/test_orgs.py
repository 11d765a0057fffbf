"""Committees, firms, mediator profiles and ties through the admin pages."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from portal.audit.models import AuditEvent
from portal.orgs.models import Committee, Firm, MediatorProfile, MediatorTie
from portal.policy import Role
from tests.conftest import log_in, post_form
from tests.factories import credit_code, make_committee, make_firm, make_user


async def rows(app: Any, model: Any) -> int:
    async with app.starlette.state.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_platform_admin_creates_committee(app: Any, client: httpx.AsyncClient) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    await log_in(client, admin.login, admin.password)
    data = {
        "name": "浦东新区消费纠纷调解中心",
        "region": "上海市浦东新区",
        "case_prefix": "pd",
        "categories": ["consumer", "credit_card"],
    }
    response = await post_form(client, "/admin/committees", data)
    assert response.status_code == 303
    async with app.starlette.state.db() as db:
        committee = await db.scalar(select(Committee))
        actions = list(await db.scalars(select(AuditEvent.action)))
    assert committee is not None and committee.case_prefix == "PD"
    assert committee.categories == ["credit_card", "consumer"]
    assert "committee.create" in actions
    listing = await client.get("/admin/committees")
    assert "浦东新区消费纠纷调解中心" in listing.text and "信用卡" in listing.text


async def test_committee_bad_input_changes_nothing(app: Any, client: httpx.AsyncClient) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    await make_committee(app, prefix="QZ", name="泉州")
    await log_in(client, admin.login, admin.password)
    before = await rows(app, Committee)
    for data, field in [
        (
            {"name": "甲", "region": "乙", "case_prefix": "P1", "categories": ["consumer"]},
            "case_prefix",
        ),
        ({"name": "甲", "region": "乙", "case_prefix": "AB", "categories": []}, "categories"),
        (
            {"name": "甲", "region": "乙", "case_prefix": "AB", "categories": ["lottery"]},
            "categories",
        ),
        ({"name": "", "region": "乙", "case_prefix": "AB", "categories": ["consumer"]}, "name"),
        ({"name": "泉州", "region": "乙", "case_prefix": "AB", "categories": ["consumer"]}, "name"),
        ({"name": "新", "region": "乙", "case_prefix": "QZ", "categories": ["consumer"]}, "name"),
    ]:
        response = await post_form(client, "/admin/committees", data)
        assert response.status_code == 400, data
        assert f'id="f-{field}-error"' in response.text, (data, response.text[-2000:])
    assert await rows(app, Committee) == before


async def test_firm_credit_code_validated_and_unique(app: Any, client: httpx.AsyncClient) -> None:
    admin = await make_user(app, Role.COMMITTEE_ADMIN)
    await log_in(client, admin.login, admin.password)
    code = credit_code()
    wrong = code[:17] + ("0" if code[17] != "0" else "1")
    bad = await post_form(
        client, "/admin/firms", {"name": "某公司", "credit_code": wrong, "industry": "banking"}
    )
    assert bad.status_code == 400
    assert "校验" in bad.text
    ok = await post_form(
        client,
        "/admin/firms",
        {"name": "某公司", "credit_code": code.lower(), "industry": "banking"},
    )
    assert ok.status_code == 303
    dup = await post_form(
        client, "/admin/firms", {"name": "另一公司", "credit_code": code, "industry": "banking"}
    )
    assert dup.status_code == 400
    assert await rows(app, Firm) == 1
    # htmx search returns only the results block.
    found = await client.get("/admin/firms?q=某公司", headers={"HX-Request": "true"})
    assert found.text.lstrip().startswith('<div class="table-wrap" id="firm-results">')
    assert "某公司" in found.text
    none = await client.get("/admin/firms?q=不存在", headers={"HX-Request": "true"})
    assert "某公司" not in none.text


async def test_committee_admin_edits_mediator_of_own_committee(
    app: Any, client: httpx.AsyncClient
) -> None:
    admin = await make_user(app, Role.COMMITTEE_ADMIN)
    async with app.starlette.state.db() as db:
        assert admin.user.committee_id is not None
        committee = await db.get(Committee, admin.user.committee_id)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee)
    await log_in(client, admin.login, admin.password)
    response = await post_form(
        client,
        f"/admin/mediators/{mediator.id}",
        {"grade": "senior", "specialties": ["credit_card", "insurance"]},
    )
    assert response.status_code == 303
    bad = await post_form(client, f"/admin/mediators/{mediator.id}", {"grade": "wizard"})
    assert bad.status_code == 400
    async with app.starlette.state.db() as db:
        profile = await db.get(MediatorProfile, mediator.id)
    assert profile is not None and profile.grade == "senior"
    assert profile.specialties == ["credit_card", "insurance"]


async def test_mediator_declares_and_withdraws_ties(app: Any, client: httpx.AsyncClient) -> None:
    mediator = await make_user(app, Role.MEDIATOR)
    firm = await make_firm(app)
    await log_in(client, mediator.login, mediator.password)
    done = await post_form(
        client,
        "/account/ties",
        {"firm_id": str(firm.id), "kind": "former_employee", "note": "2019 年离职"},
    )
    assert done.status_code == 303
    again = await post_form(
        client, "/account/ties", {"firm_id": str(firm.id), "kind": "shareholder"}
    )
    assert again.status_code == 400
    missing = await post_form(client, "/account/ties", {"firm_id": "999999", "kind": "shareholder"})
    assert missing.status_code == 404
    page = await client.get("/account/ties")
    assert firm.name in page.text and "2019 年离职" in page.text
    async with app.starlette.state.db() as db:
        tie = await db.scalar(select(MediatorTie))
    assert tie is not None
    assert (await post_form(client, f"/account/ties/{tie.id}/withdraw")).status_code == 303
    assert await rows(app, MediatorTie) == 0
