"""The firm API over HTTP, on SQLite and PostgreSQL: tokens made on the integration page (shown
once, revocable), each endpoint doing its work, and every refusal answered in problem details
in the caller's language, changing nothing."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, update

from portal.api import service as api
from portal.api.models import ApiToken
from portal.app import create_app
from portal.audit.models import AuditEvent
from portal.cases.models import Case, CaseEvent, CaseMaterial
from portal.db import utcnow
from portal.evidence.models import LogLeaf
from portal.policy import Role
from tests.agreements.test_service import World, build, make_effective, terms
from tests.conftest import (
    REDIS_PREFIX,
    REDIS_URL,
    log_in,
    make_settings,
    post_form,
    redis_available,
    require_service,
    truncate_all,
)
from tests.factories import PDF, Person, make_case, make_firm, make_user

ALL = list(api.SCOPES)


async def token_for(app: Any, rep: Person, scopes: list[str] | None = None, days: int = 90) -> str:
    from portal.accounts.models import User

    async with app.starlette.state.db() as db:
        user = await db.get(User, rep.id)
        assert user is not None
        issued = await api.create_token(db, user, name="系统", scopes=scopes or ALL, days=days)
    return issued.secret


def bearer(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"] and body["title"]
    return body


async def count(app: Any, model: Any) -> int:
    async with app.starlette.state.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_tokens_are_made_on_the_page_shown_once_and_revoked(
    app: Any, client: httpx.AsyncClient
) -> None:
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    other = await make_user(app, Role.FIRM_REP)
    await log_in(client, rep.login, rep.password)
    page = await client.get("/firm/integration")
    assert page.status_code == 200 and "一键调解链接" in page.text
    refused = await post_form(client, "/firm/integration", {"name": "", "days": "7"})
    assert refused.status_code == 400 and "请至少选择一项权限" in refused.text
    assert await count(app, ApiToken) == 0
    made = await post_form(
        client,
        "/firm/integration",
        {"name": "投诉系统", "scopes": ["cases:read", "evidence:write"], "days": "30"},
    )
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    secret = made.text.split('data-testid="token-secret"')[1].split('value="')[1].split('"')[0]
    assert secret.startswith("jfk_") and len(secret) > 40
    again = await client.get("/firm/integration")
    assert secret not in again.text and secret[:12] in again.text  # only the prefix, later
    async with app.starlette.state.db() as db:
        token = await db.scalar(select(ApiToken))
        assert token is not None
        assert token.digest == api.digest(secret) and secret not in json.dumps(token.scopes)
        assert token.scopes == ["cases:read", "evidence:write"]
        assert token.expires_at is not None
        assert token.expires_at - utcnow() > timedelta(days=29)
    listed = await client.get("/api/v1/cases", headers=bearer(secret))
    assert listed.status_code == 200
    # Another firm's representative cannot revoke it (404), its own can.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as stranger:
        await log_in(stranger, other.login, other.password)
        assert (
            await post_form(stranger, f"/firm/integration/tokens/{token.id}/revoke")
        ).status_code == 404
    revoked = await post_form(client, f"/firm/integration/tokens/{token.id}/revoke")
    assert revoked.status_code == 303
    problem(await client.get("/api/v1/cases", headers=bearer(secret)), 401)
    async with app.starlette.state.db() as db:
        actions = set(await db.scalars(select(AuditEvent.action)))
    assert {"api.token_create", "api.token_revoke"} <= actions


async def test_reading_cases_is_limited_to_the_firms_own_paged_by_cursor(app: Any) -> None:
    w: World = await build(app)
    firm_case = w.case_id
    async with app.starlette.state.db() as db:
        case = await db.get(Case, firm_case)
        assert case is not None
        firm_id = case.respondent_firm_id
    from portal.orgs.models import Firm

    async with app.starlette.state.db() as db:
        firm = await db.get(Firm, firm_id)
    more = [await make_case(app, w.claimant, firm) for _ in range(4)]
    elsewhere = await make_case(app, w.claimant, await make_firm(app))
    secret = await token_for(app, w.rep, ["cases:read"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        seen: list[int] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = await http.get("/api/v1/cases", params=params, headers=bearer(secret))
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["items"]) <= 2
            seen += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted([firm_case, *(c.id for c in more)], reverse=True)
        assert elsewhere.id not in seen
        only = await http.get(
            "/api/v1/cases", params={"status": "in_mediation"}, headers=bearer(secret)
        )
        assert [i["id"] for i in only.json()["items"]] == [firm_case]
        one = await http.get(f"/api/v1/cases/{firm_case}", headers=bearer(secret))
        detail = one.json()
        assert detail["number"] and detail["status"] == "in_mediation"
        assert detail["claimant"].startswith("张") and "三" not in detail["claimant"]
        problem(await http.get(f"/api/v1/cases/{elsewhere.id}", headers=bearer(secret)), 404)
        problem(await http.get("/api/v1/cases/999999", headers=bearer(secret)), 404)
        problem(await http.get("/api/v1/cases/-1", headers=bearer(secret)), 404)
        problem(await http.get("/api/v1/cases/9" * 30, headers=bearer(secret)), 404)
        for bad in (
            {"limit": "0"},
            {"limit": "x"},
            {"cursor": "!!"},
            {"cursor": "0"},
            {"status": "draft"},
            {"x": "1"},
        ):
            problem(await http.get("/api/v1/cases", params=bad, headers=bearer(secret)), 400)
        # Without the permission to answer, answering is refused (403) and changes nothing.
        refused = await http.post(
            f"/api/v1/cases/{firm_case}/response",
            json={"kind": "agree"},
            headers=bearer(secret),
        )
        assert "cases:respond" in problem(refused, 403)["detail"]
        assert problem(await http.get("/api/v1/nothing", headers=bearer(secret)), 404)
        assert problem(await http.delete("/api/v1/cases", headers=bearer(secret)), 405)


async def test_answering_proposing_uploading_and_paying(app: Any) -> None:
    w: World = await build(app)
    secret = await token_for(app, w.rep)
    base = f"/api/v1/cases/{w.case_id}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        # Declining needs a reason: refused in Chinese by default, in English when asked.
        zh = problem(
            await http.post(f"{base}/response", json={"kind": "decline"}, headers=bearer(secret)),
            409,
        )
        assert zh["detail"] == "请填写理由。" and zh["errors"][0]["field"] == "reason"
        en = problem(
            await http.post(
                f"{base}/response",
                json={"kind": "decline"},
                headers=bearer(secret, **{"Accept-Language": "en-GB,en;q=0.9"}),
            ),
            409,
        )
        assert en["detail"] == "Give a reason."
        invalid = problem(
            await http.post(
                f"{base}/response", json={"kind": "maybe", "x": 1}, headers=bearer(secret)
            ),
            422,
        )
        assert {e["field"] for e in invalid["errors"]} == {"kind", "x"}
        problem(
            await http.post(
                f"{base}/response",
                content=b"{",
                headers=bearer(secret, **{"Content-Type": "application/json"}),
            ),
            422,
        )
        problem(
            await http.post(f"{base}/response", data={"kind": "agree"}, headers=bearer(secret)), 415
        )
        big = json.dumps({"kind": "decline", "reason": "理" * 40_000})
        problem(
            await http.post(
                f"{base}/response",
                content=big,
                headers=bearer(secret, **{"Content-Type": "application/json"}),
            ),
            413,
        )
        async with app.starlette.state.db() as db:
            case = await db.get(Case, w.case_id)
            assert case is not None and case.firm_response is None
        agreed = await http.post(f"{base}/response", json={"kind": "agree"}, headers=bearer(secret))
        assert agreed.status_code == 200 and agreed.json()["firm_response"] == "agree"
        proposed = await http.post(
            f"{base}/proposals",
            json={"amount_fen": 150_000, "terms": "分两期退还"},
            headers=bearer(secret),
        )
        assert proposed.status_code == 201, proposed.text
        assert proposed.json()["firm_offer_fen"] == 150_000
        # Evidence, streamed in multipart; logged as evidence; a bad file keeps nothing.
        leaves = await count(app, LogLeaf)
        uploaded = await http.post(
            f"{base}/evidence",
            files=[("file", ("还款记录.pdf", PDF, "application/pdf"))],
            data={"title": "还款记录", "visibility": "parties"},
            headers=bearer(secret),
        )
        assert uploaded.status_code == 201, uploaded.text
        [item] = uploaded.json()["items"]
        assert item["party"] == "respondent" and item["title"] == "还款记录"
        assert await count(app, LogLeaf) == leaves + 1
        materials = await count(app, CaseMaterial)
        bad = await http.post(
            f"{base}/evidence",
            files=[
                ("file", ("a.pdf", PDF + b"x", "application/pdf")),
                ("file", ("b.exe", b"MZ\x90\x00" * 50, "application/pdf")),
            ],
            headers=bearer(secret),
        )
        problem(bad, 409)
        assert await count(app, CaseMaterial) == materials
        problem(await http.post(f"{base}/evidence", json={}, headers=bearer(secret)), 415)
        seen = (await http.get(base, headers=bearer(secret))).json()["materials"]
        assert item["id"] in [m["id"] for m in seen]
        # No agreement yet: 404; once in effect, read it and record a payment.
        problem(await http.get(f"{base}/agreement", headers=bearer(secret)), 404)
        await make_effective(app, w, terms(amount_fen=200_000, parts=2))
        agreement = (await http.get(f"{base}/agreement", headers=bearer(secret))).json()
        assert agreement["status"] == "effective" and len(agreement["instalments"]) == 2
        first = agreement["instalments"][0]
        wrong = await http.post(
            f"{base}/agreement/payments/1",
            json={"amount_fen": first["amount_fen"] + 1, "paid_on": "2026-01-05"},
            headers=bearer(secret),
        )
        assert problem(wrong, 409)["errors"][0]["field"] == "amount_fen"
        paid = await http.post(
            f"{base}/agreement/payments/1",
            json={
                "amount_fen": first["amount_fen"],
                "paid_on": utcnow().date().isoformat(),
                "reference": "TX-1",
            },
            headers=bearer(secret),
        )
        assert paid.status_code == 200, paid.text
        assert paid.json()["instalments"][0]["state"] == "paid"
        problem(
            await http.post(
                f"{base}/agreement/payments/9",
                json={"amount_fen": 1, "paid_on": "2026-01-05"},
                headers=bearer(secret),
            ),
            404,
        )
    async with app.starlette.state.db() as db:
        kinds = list(await db.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == w.case_id)))
    assert kinds.count("response") == 2


async def test_bad_tokens_are_refused(app: Any) -> None:
    w: World = await build(app)
    live = await token_for(app, w.rep)
    expired = await token_for(app, w.rep)
    async with app.starlette.state.db() as db:
        await db.execute(
            update(ApiToken)
            .where(ApiToken.digest == api.digest(expired))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for headers in (
            {},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            bearer("jfk_" + "A" * 43),
            bearer("nonsense"),
            bearer(expired),
        ):
            body = problem(await http.get("/api/v1/cases", headers=headers), 401)
            assert body["type"].endswith("/problems/401")
        response = await http.get("/api/v1/cases", headers={})
        assert response.headers["www-authenticate"].startswith("Bearer")
        # A session cookie is not a token: logged in on the portal, the API still says 401.
        await log_in(http, w.rep.login, w.rep.password)
        problem(await http.get("/api/v1/cases"), 401)
        assert (await http.get("/api/v1/cases", headers=bearer(live))).status_code == 200
    # The representative leaves the firm: the token stops.
    from portal.accounts.models import User

    async with app.starlette.state.db() as db:
        await db.execute(update(User).where(User.id == w.rep.id).values(is_active=False))
        await db.commit()
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        problem(await http.get("/api/v1/cases", headers=bearer(live)), 401)


@pytest.fixture(params=["memory", "redis"])
async def limited_app(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path
) -> AsyncIterator[Any]:
    """Counted in memory, or in Redis (as when several processes serve the API)."""
    extra: dict[str, Any] = {}
    if request.param == "redis":
        if not redis_available():
            require_service("Redis", "nothing listens at 127.0.0.1:6379")
        # A prefix of its own: each run starts with no calls counted.
        extra = {"redis_url": REDIS_URL, "redis_prefix": f"{REDIS_PREFIX}-{secrets.token_hex(4)}"}
    application = create_app(make_settings(db_url, tmp_path, api_rate_limit="3/minute", **extra))
    async with LifespanManager(application):
        yield application
    await truncate_all(db_url)


async def test_too_many_requests_wait_as_told(limited_app: Any) -> None:
    rep = await make_user(limited_app, Role.FIRM_REP)
    first, second = await token_for(limited_app, rep), await token_for(limited_app, rep)
    transport = httpx.ASGITransport(app=limited_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for _ in range(3):
            assert (await http.get("/api/v1/cases", headers=bearer(first))).status_code == 200
        refused = await http.get("/api/v1/cases", headers=bearer(first))
        problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Each token has its own allowance.
        assert (await http.get("/api/v1/cases", headers=bearer(second))).status_code == 200


async def test_last_use_is_recorded(app: Any) -> None:
    rep = await make_user(app, Role.FIRM_REP)
    secret = await token_for(app, rep)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/api/v1/cases", headers=bearer(secret))).status_code == 200
    async with app.starlette.state.db() as db:
        token = await db.scalar(select(ApiToken))
        assert token is not None and token.last_used_at is not None
        assert token.last_used_ip == "203.0.113.9"
