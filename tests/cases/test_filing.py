"""Filing through the wizard over HTTP, then review, assignment and the firm's answer."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import func, select

from portal.cases.models import Case, CaseEvent
from portal.notify.models import Notification
from portal.policy import Role
from tests.conftest import csrf_token, log_in, post_form
from tests.factories import PDF, PNG, VALID_ID, make_committee, make_firm, make_user


async def count(app: Any, model: Any) -> int:
    async with app.starlette.state.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def last_case(app: Any) -> Case:
    async with app.starlette.state.db() as db:
        case = await db.scalar(select(Case).order_by(Case.id.desc()).limit(1))
    assert case is not None
    return case


async def verify_phone_over_http(app: Any, client: httpx.AsyncClient, phone: str) -> None:
    sent = await post_form(client, "/account/phone", {"action": "send", "phone": phone})
    assert sent.status_code == 200, sent.text
    async with app.starlette.state.db() as db:
        sms = await db.scalar(
            select(Notification)
            .where(Notification.channel == "sms")
            .order_by(Notification.id.desc())
        )
    assert sms is not None and sms.status == "pending"
    code = sms.params["code"]
    wrong = await post_form(
        client,
        "/account/phone",
        {"action": "verify", "code": "000000" if code != "000000" else "111111"},
    )
    assert wrong.status_code == 400
    ok = await post_form(client, "/account/phone", {"action": "verify", "code": code})
    assert ok.status_code == 303


async def upload(
    client: httpx.AsyncClient, case_id: int, kind: str, name: str, content: bytes
) -> httpx.Response:
    token = await csrf_token(client)
    return await client.post(
        f"/cases/{case_id}/materials",
        data={"csrf_token": token, "kind": kind},
        files={"file": (name, content, "application/octet-stream")},
    )


async def test_consumer_files_and_the_case_moves_to_the_firm(
    app: Any, client: httpx.AsyncClient
) -> None:
    committee = await make_committee(app, prefix="PT", categories=["credit_card", "consumer"])
    firm = await make_firm(app, name="示例银行信用卡中心")
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="李调解员")
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    consumer = await make_user(app, Role.CONSUMER, email="zhang@example.com")
    await log_in(client, consumer.login, consumer.password)

    page = await client.get("/cases/new")
    form_key = re.search(r'name="form_key" value="([^"]+)"', page.text).group(1)
    start = {"category": "credit_card", "firm_id": str(firm.id), "form_key": form_key}
    first = await post_form(client, "/cases/new", start)
    assert first.status_code == 303
    again = await post_form(client, "/cases/new", start)  # the same form sent twice
    assert again.headers["location"] == first.headers["location"]
    assert await count(app, Case) == 1
    case = await last_case(app)
    assert case.committee_id == committee.id and case.status == "draft"

    base = f"/cases/{case.id}/edit"
    bad_id = await post_form(
        client,
        f"{base}/claimant",
        {"filed_as": "self", "name": "张三", "id_number": "110105194912310021"},
    )
    assert bad_id.status_code == 400 and "身份证" in bad_id.text
    ok = await post_form(
        client, f"{base}/claimant", {"filed_as": "self", "name": "张三", "id_number": VALID_ID}
    )
    assert ok.status_code == 303
    for data, field in [
        ({"amount": "0", "outcomes": "refund", "facts": "x"}, "amount"),
        ({"amount": "10000000000.01", "outcomes": "refund", "facts": "x"}, "amount"),
        ({"amount": "100", "outcomes": "refund", "facts": "x" * 20001}, "facts"),
        (
            {"amount": "100", "outcomes": "refund", "facts": "x", "incident_date": "2999-01-01"},
            "incident_date",
        ),
        ({"amount": "100", "facts": "x"}, "outcomes"),
    ]:
        refused = await post_form(client, f"{base}/claims", data)
        assert refused.status_code == 400, data
        assert f'id="f-{field}-error"' in refused.text, data
    facts = "2026年3月办理信用卡分期，银行未告知手续费率，要求退还多收的手续费。"
    ok = await post_form(
        client,
        f"{base}/claims",
        {"amount": "1,280.50", "outcomes": ["refund", "waiver"], "facts": facts},
    )
    assert ok.status_code == 303
    questions = ("in_court", "in_arbitration", "other_mediator", "has_decision", "settled")
    answers = dict.fromkeys(questions, "no")
    stopped = await post_form(client, f"{base}/eligibility", {**answers, "in_court": "yes"})
    assert stopped.status_code == 200 and 'data-testid="ineligible"' in stopped.text
    assert "法院" in stopped.text
    assert (await post_form(client, f"{base}/eligibility", answers)).status_code == 303

    review = await client.get(f"{base}/review")
    assert 'data-testid="missing"' in review.text
    refused = await post_form(client, f"/cases/{case.id}/submit")
    assert (await last_case(app)).status == "draft" and refused.status_code == 303

    wrong_type = await upload(client, case.id, "identity", "id.pdf", PNG)
    assert (
        "不符" in (await client.get(wrong_type.headers["location"])).text
        or wrong_type.status_code == 303
    )
    assert (await upload(client, case.id, "identity", "身份证.png", PNG)).status_code == 303
    traversal = await upload(client, case.id, "contract", "../../etc/合同.pdf", PDF)
    assert "文件夹" in (await client.get(traversal.headers["location"])).text
    assert (await upload(client, case.id, "contract", "合同.pdf", PDF)).status_code == 303
    await verify_phone_over_http(app, client, "13912345678")
    review = await client.get(f"{base}/review")
    assert 'data-testid="missing"' not in review.text, review.text
    assert "合同.pdf" in review.text and "../" not in review.text

    submitted = await post_form(client, f"/cases/{case.id}/submit")
    assert submitted.headers["location"] == f"/cases/{case.id}"
    twice = await post_form(client, f"/cases/{case.id}/submit")
    assert twice.headers["location"] == f"/cases/{case.id}"
    case = await last_case(app)
    assert case.status == "submitted" and re.fullmatch(r"PT-20\d\d-000001", case.number or "")
    assert case.amount_fen == 128050

    # The committee reviews, accepts (triage: simple) and assigns the suggested mediator.
    staff = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with staff:
        await log_in(staff, admin.login, admin.password)
        listing = await staff.get("/cases?status=submitted")
        assert case.number in listing.text
        assert (
            await post_form(staff, f"/cases/{case.id}/act", {"action": "accept"})
        ).status_code == 303
        case = await last_case(app)
        assert case.status == "accepted" and case.complexity == "simple"
        assert case.firm_response_due is not None and case.close_due is not None
        suggestions = await staff.get(f"/cases/{case.id}/assign")
        assert "李调解员" in suggestions.text
        assigned = await post_form(
            staff, f"/cases/{case.id}/assign", {"mediator_id": str(mediator.id)}
        )
        assert assigned.status_code == 303
        illegal = await post_form(staff, f"/cases/{case.id}/act", {"action": "settle"})
        assert illegal.status_code == 303
        assert (await last_case(app)).status == "assigned"

    # The consumer sees the timeline and the mediator; the firm answers.
    mine = await client.get(f"/cases/{case.id}")
    assert ("李调解员" in mine.text and "已受理" in mine.text) or "受理" in mine.text
    firm_client = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with firm_client:
        await log_in(firm_client, rep.login, rep.password)
        assert case.number in (await firm_client.get("/cases")).text
        answered = await post_form(
            firm_client,
            f"/cases/{case.id}/respond",
            {"kind": "propose", "offer": "800", "terms": "退还手续费800元"},
        )
        assert answered.status_code == 303
    case = await last_case(app)
    assert case.firm_response == "propose" and case.firm_offer_fen == 80000
    live = await client.get(f"/cases/{case.id}", headers={"HX-Request": "true"})
    assert "<html" not in live.text and "¥800.00" in live.text

    async with app.starlette.state.db() as db:
        steps = [
            (e.from_status, e.to_status)
            for e in await db.scalars(
                select(CaseEvent)
                .where(CaseEvent.case_id == case.id, CaseEvent.kind == "transition")
                .order_by(CaseEvent.id)
            )
        ]
        in_app = await db.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == consumer.id, Notification.channel == "in_app")
        )
    assert [s[1] for s in steps] == ["draft", "submitted", "accepted", "assigned"]
    assert in_app and in_app >= 3


async def test_other_peoples_cases_answer_404(app: Any, client: httpx.AsyncClient) -> None:
    from tests.factories import make_case, verify_phone

    committee = await make_committee(app)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm, other_firm = await make_firm(app), await make_firm(app)
    owner = await make_user(app, Role.CONSUMER, phone="13600000001")
    await verify_phone(app, owner)
    case = await make_case(app, owner, firm, status="accepted")
    stranger = await make_user(app, Role.CONSUMER)
    other_rep = await make_user(app, Role.FIRM_REP, firm=other_firm)
    for person in (stranger, other_rep):
        await log_in(client, person.login, person.password)
        assert (await client.get(f"/cases/{case.id}")).status_code == 404
        assert (
            await post_form(client, f"/cases/{case.id}/messages", {"message": "hi"})
        ).status_code == 404
        assert case.number not in (await client.get("/cases")).text
        await post_form(client, "/accounts/logout")
