"""Early warnings by a Poisson test against the firm's own baseline, and risk notices that the
firm sees and acknowledges, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from portal.analytics import alerts
from portal.analytics.models import RiskNotice
from portal.audit.models import AuditEvent
from portal.cases.models import Case
from portal.cases.service import today_in_china
from portal.db import utcnow
from portal.notify.models import Notification
from portal.policy import Role
from tests.conftest import log_in, post_form
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone


def test_poisson_tail_matches_the_textbook() -> None:
    # P(X >= 1) = 1 - e^-λ; P(X >= 0) = 1.
    assert alerts.poisson_tail(1, 2.0) == pytest.approx(1 - 2.718281828459045**-2)
    assert alerts.poisson_tail(0, 3.0) == pytest.approx(1.0)
    # 8 complaints where 0.078 were expected is far beyond chance.
    assert alerts.poisson_tail(8, 2 * 7 / 180) < 1e-12


async def _world(app: Any) -> dict[str, Any]:
    committee = await make_committee(app, categories=["credit_card", "small_loan"])
    surging, steady = await make_firm(app), await make_firm(app)
    people = {
        "admin": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee),
        "rep": await make_user(app, Role.FIRM_REP, firm=surging),
        "other_rep": await make_user(app, Role.FIRM_REP, firm=steady),
        "consumer": await make_user(app, Role.CONSUMER, phone="13900000088"),
    }
    await verify_phone(app, people["consumer"])
    now = utcnow()
    plan = [
        # The surging firm: 2 in the baseline, 8 in the last 7 days.
        *[(surging, "small_loan", now - timedelta(days=60 + i)) for i in range(2)],
        *[(surging, "small_loan", now - timedelta(days=i % 5, hours=1)) for i in range(8)],
        # The steady firm: 30 in the baseline (one every 6 days), 2 in the last 30 days.
        *[(steady, "credit_card", now - timedelta(days=31 + 5 * i)) for i in range(30)],
        *[(steady, "credit_card", now - timedelta(days=3 + 10 * i)) for i in range(2)],
    ]
    state = app.starlette.state
    for firm, category, when in plan:
        case = await make_case(app, people["consumer"], firm, category=category)
        async with state.db() as db:
            await db.execute(
                update(Case)
                .where(Case.id == case.id)
                .values(submitted_at=when, committee_id=committee.id)
            )
            await db.commit()
    return {"committee": committee, "surging": surging, "steady": steady, "people": people}


async def test_a_surge_is_flagged_and_a_steady_firm_is_not(app: Any) -> None:
    world = await _world(app)
    async with app.starlette.state.db() as db:
        found = await alerts.alerts(db, world["committee"].id)
    by_key = {(a.kind, a.key, a.window_days): a for a in found}
    surge = by_key[("firm", world["surging"].id, 7)]
    assert (surge.observed, surge.baseline) == (8, 2)
    assert surge.expected == pytest.approx(2 * 7 / 180)
    assert surge.p_value < alerts.ALPHA and surge.label == world["surging"].name
    assert ("firm", world["surging"].id, 30) in by_key
    assert ("category", "small_loan", 7) in by_key
    assert not [a for a in found if a.kind == "firm" and a.key == world["steady"].id]
    assert not [a for a in found if a.kind == "category" and a.key == "credit_card"]
    # Another committee's view holds none of them.
    other = await make_committee(app)
    async with app.starlette.state.db() as db:
        assert await alerts.alerts(db, other.id) == []
        behind = await alerts.cases_behind(db, surge, world["committee"].id)
    assert len(behind) == 8
    assert all(row.submitted_at.date() >= today_in_china() - timedelta(days=7) for row in behind)


async def test_a_risk_notice_is_sent_seen_and_acknowledged(
    app: Any, client: httpx.AsyncClient
) -> None:
    world = await _world(app)
    admin, rep, other_rep = (world["people"][k] for k in ("admin", "rep", "other_rep"))
    surging = world["surging"].id
    await log_in(client, admin.login, admin.password)
    page = await client.get("/admin/warnings")
    assert page.status_code == 200
    assert f'data-testid="alert-firm-{surging}-7"' in page.text
    assert "泊松" in page.text  # the test is stated

    # Bad input: an unknown period, a firm without a warning, an empty message.
    state = app.starlette.state
    for data in (
        {"firm": str(surging), "window": "8", "message": "x"},
        {"firm": str(world["steady"].id), "window": "7", "message": "x"},
        {"firm": str(surging), "window": "7", "message": "   "},
        {"firm": "1 OR 1=1", "window": "7", "message": "x"},
    ):
        refused = await post_form(client, "/admin/warnings/notice", data)
        assert refused.status_code == 400, data
        assert 'data-testid="notice-error"' in refused.text
    async with state.db() as db:
        assert await db.scalar(select(func.count(RiskNotice.id))) == 0

    sent = await post_form(
        client,
        "/admin/warnings/notice",
        {
            "firm": str(surging),
            "window": "7",
            "message": "请核查近期投诉激增的原因并于五个工作日内书面答复。",
        },
    )
    assert sent.status_code == 303
    async with state.db() as db:
        notice = await db.scalar(select(RiskNotice))
        assert notice is not None
        assert notice.figures["observed"] == 8 and len(notice.figures["case_ids"]) == 8
        assert notice.committee_id == world["committee"].id
        told = await db.scalar(
            select(func.count(Notification.id)).where(Notification.user_id == rep.id)
        )
        assert told and told >= 1
        assert (
            await db.scalar(
                select(func.count(AuditEvent.id)).where(AuditEvent.action == "risk_notice.send")
            )
            == 1
        )

    # The other firm's representative cannot see it.
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})
    await log_in(client, other_rep.login, other_rep.password)
    assert (await client.get(f"/notices/{notice.id}")).status_code == 404
    assert f"/notices/{notice.id}" not in (await client.get("/notices")).text
    refused = await post_form(client, f"/notices/{notice.id}", {"reply": "no"})
    assert refused.status_code == 404

    # The firm's own representative reads and acknowledges it, once.
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})
    await log_in(client, rep.login, rep.password)
    listing = await client.get("/notices")
    assert f"/notices/{notice.id}" in listing.text
    shown = await client.get(f"/notices/{notice.id}")
    assert "请核查近期投诉激增的原因" in shown.text and 'data-testid="acknowledge"' in shown.text
    done = await post_form(client, f"/notices/{notice.id}", {"reply": "已成立专项小组排查。"})
    assert done.status_code == 303
    again = await post_form(client, f"/notices/{notice.id}", {"reply": "again"})
    assert again.status_code == 400
    async with state.db() as db:
        notice = await db.get(RiskNotice, notice.id)
        assert notice is not None and notice.acknowledged_by_id == rep.id
        assert notice.reply == "已成立专项小组排查。"
        assert (
            await db.scalar(
                select(func.count(AuditEvent.id)).where(
                    AuditEvent.action == "risk_notice.acknowledge"
                )
            )
            == 1
        )

    # The administrator sees the acknowledgement.
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})
    await log_in(client, admin.login, admin.password)
    page = await client.get(f"/notices/{notice.id}")
    assert 'data-testid="notice-acknowledged"' in page.text and "专项小组" in page.text


async def _token(client: httpx.AsyncClient) -> str:
    from tests.conftest import csrf_token

    return await csrf_token(client)
