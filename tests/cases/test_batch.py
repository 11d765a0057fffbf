"""Batch actions on the staff list: accept, assign and message many cases at once, chosen or
every case a filter matches; each case done as if alone (timeline, audit), the others named
with the reason; bad batches refused before any case is touched."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from portal.audit.models import AuditEvent
from portal.cases.models import Case, CaseEvent
from portal.orgs import service as orgs
from portal.policy import Role
from tests.conftest import log_in, post_form
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone


async def _world(app: Any) -> dict[str, Any]:
    committee = await make_committee(app)
    other = await make_committee(app, categories=["insurance"])
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=other)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="周调解员")
    firm, tied_firm = await make_firm(app, name="乙银行"), await make_firm(app)
    consumer = await make_user(app, Role.CONSUMER, phone="13900000551", name="陈六")
    await verify_phone(app, consumer)
    mine = [await make_case(app, consumer, firm, category="credit_card") for _ in range(3)]
    tied = await make_case(app, consumer, tied_firm, category="credit_card")
    elsewhere = await make_case(app, consumer, firm, category="insurance")
    async with app.starlette.state.db() as db:
        _, profile = await orgs.get_mediator(db, mediator.id)
        await orgs.declare_tie(
            db, mediator.id, profile, firm_id=tied_firm.id, kind="former_employee", note=""
        )
    return {
        "admin": admin,
        "mediator": mediator,
        "consumer": consumer,
        "mine": mine,
        "tied": tied,
        "elsewhere": elsewhere,
    }


async def _statuses(app: Any, ids: list[int]) -> list[str]:
    async with app.starlette.state.db() as db:
        return [c.status for c in [await db.get(Case, i) for i in ids] if c is not None]


async def test_accept_assign_and_message_in_batches(app: Any, client: httpx.AsyncClient) -> None:
    w = await _world(app)
    await log_in(client, w["admin"].login, w["admin"].password)
    listed = await client.get("/cases")
    assert 'data-testid="batch-form"' in listed.text
    chosen = [c.id for c in w["mine"][:2]] + [w["elsewhere"].id]
    accepted = await post_form(client, "/cases/batch", {"action": "accept", "case_ids": chosen})
    assert accepted.status_code == 200
    assert "2 件已完成，1 件未完成" in accepted.text
    assert "没有这个案件" in accepted.text  # another committee's case, not named as such
    assert await _statuses(app, chosen) == ["accepted", "accepted", "submitted"]
    # Every case the filter matches: the remaining submitted cases of this committee.
    rest = await post_form(
        client,
        "/cases/batch",
        {"action": "accept", "all_matching": "1", "query": "status=submitted"},
    )
    assert "2 件已完成，0 件未完成" in rest.text
    ids = [c.id for c in w["mine"]] + [w["tied"].id]
    assert await _statuses(app, ids) == ["accepted"] * 4
    # Assigning: the mediator's declared tie to one firm keeps that case back, with the reason.
    assigned = await post_form(
        client,
        "/cases/batch",
        {"action": "assign", "mediator_id": str(w["mediator"].id), "case_ids": ids},
    )
    assert "3 件已完成，1 件未完成" in assigned.text
    assert await _statuses(app, ids) == ["assigned"] * 3 + ["accepted"]
    # A message from a template, filled in for each case.
    sent = await post_form(
        client,
        "/cases/batch",
        {
            "action": "notify",
            "audience": "claimant",
            "template": "{claimant}您好，案件{number}（{firm}）将于近日安排调解。",
            "case_ids": ids[:2],
        },
    )
    assert "2 件已完成" in sent.text
    async with app.starlette.state.db() as db:
        texts = list(
            await db.scalars(
                select(CaseEvent.body).where(CaseEvent.kind == "message").order_by(CaseEvent.id)
            )
        )
        numbers = [(await db.get(Case, i)).number for i in ids[:2]]  # type: ignore[union-attr]
        assigns = await db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "case.assign")
        )
    assert texts == [f"张三您好，案件{n}（乙银行）将于近日安排调解。" for n in numbers]
    assert assigns == 3


async def test_bad_batches_change_nothing(app: Any, client: httpx.AsyncClient) -> None:
    w = await _world(app)
    await log_in(client, w["admin"].login, w["admin"].password)
    ids = [c.id for c in w["mine"]]
    for data, text in (
        ({"action": "explode", "case_ids": ids}, "请从选项中选择一项"),
        ({"action": "accept"}, "请至少选择一个案件"),
        ({"action": "assign", "case_ids": ids}, "请选择本调解委员会的调解员"),
        ({"action": "notify", "template": "{password}", "case_ids": ids}, "未知字段 {password}"),
        ({"action": "notify", "template": "{", "case_ids": ids}, "未知字段"),
        ({"action": "notify", "template": "", "case_ids": ids}, "请填写留言内容"),
        ({"action": "accept", "case_ids": [str(i) for i in range(1, 503)]}, "每次最多 500 件"),
    ):
        refused = await post_form(client, "/cases/batch", data)
        assert refused.status_code == 400 and text in refused.text, (data, refused.text[-600:])
    assert await _statuses(app, ids) == ["submitted"] * 3
    # Only staff: a consumer's batch is answered as nothing there.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as other:
        await log_in(other, w["consumer"].login, w["consumer"].password)
        assert (
            await post_form(other, "/cases/batch", {"action": "accept", "case_ids": ids})
        ).status_code == 404
    assert await _statuses(app, ids) == ["submitted"] * 3


async def test_status_changes_and_sessions_in_a_row(app: Any, client: httpx.AsyncClient) -> None:
    """The committee starts mediation on many cases; their mediator schedules their sessions
    one after another; a case that cannot take the action is named and left alone."""
    from datetime import datetime, timedelta

    from portal.cases.service import TZ
    from portal.meetings.models import Meeting

    w = await _world(app)
    await log_in(client, w["admin"].login, w["admin"].password)
    ids = [c.id for c in w["mine"]]
    await post_form(client, "/cases/batch", {"action": "accept", "case_ids": ids})
    await post_form(
        client,
        "/cases/batch",
        {"action": "assign", "mediator_id": str(w["mediator"].id), "case_ids": ids[:2]},
    )
    started = await post_form(
        client,
        "/cases/batch",
        {"action": "status", "transition": "start_mediation", "case_ids": ids},
    )
    assert "2 件已完成，1 件未完成" in started.text  # the third has no mediator yet
    assert await _statuses(app, ids) == ["in_mediation", "in_mediation", "accepted"]
    # Scheduling is the mediator's: not offered to the committee.
    refused = await post_form(client, "/cases/batch", {"action": "schedule", "case_ids": ids})
    assert refused.status_code == 400 and "请从选项中选择一项" in refused.text
    bad = await post_form(client, "/cases/batch", {"action": "status", "case_ids": ids})
    assert bad.status_code == 400

    mediator = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    async with mediator:
        await log_in(mediator, w["mediator"].login, w["mediator"].password)
        listed = await mediator.get("/cases")
        assert 'data-testid="batch-form"' in listed.text and 'name="starts_at"' in listed.text
        assert "f-batch-mediator" not in listed.text  # assigning is the committee's
        first = (datetime.now(TZ) + timedelta(days=1)).replace(
            hour=9, minute=0, second=0, microsecond=0
        )
        planned = await post_form(
            mediator,
            "/cases/batch",
            {
                "action": "schedule",
                "starts_at": first.strftime("%Y-%m-%dT%H:%M"),
                "duration": "30",
                "gap": "10",
                "mode": "video",
                "case_ids": [ids[2], *ids[:2]],  # the first is not theirs
            },
        )
        assert "2 件已完成，1 件未完成" in planned.text, planned.text[-800:]
    async with app.starlette.state.db() as db:
        meetings = list(await db.scalars(select(Meeting).order_by(Meeting.starts_at)))
    assert [m.case_id for m in meetings] == ids[:2]
    assert [m.starts_at.astimezone(TZ) for m in meetings] == [
        first,
        first + timedelta(minutes=40),
    ]
