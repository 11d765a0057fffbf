"""Webhooks against a real HTTP receiver on loopback (aiohttp): registered on the integration
page (secret shown once), events of the firm's cases delivered signed, a failed delivery
tried again later and given up after a day, a replayed or altered request refused by the
receiver's check, the delivery log's "resend"."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager
from sqlalchemy import select, update

from portal.accounts.models import User
from portal.api import webhooks
from portal.api.models import WebhookDelivery, WebhookEndpoint
from portal.app import create_app
from portal.cases import service as cases
from portal.cases.models import Case
from portal.db import utcnow
from portal.policy import Role
from tests.conftest import free_port, log_in, make_settings, post_form, truncate_all
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone


@dataclass
class Receiver:
    url: str
    secret: str = ""
    answers: list[int] = field(default_factory=list)  # statuses to give, then 200
    got: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(url=f"http://127.0.0.1:{port}/hook")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        ok = webhooks.verify(found.secret, request.headers, body)
        found.got.append((headers, body, ok))
        status = found.answers.pop(0) if found.answers else 200
        return web.Response(status=status if ok else 401, text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield found
    await runner.cleanup()


@pytest.fixture
async def hook_app(db_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    application = create_app(make_settings(db_url, tmp_path, webhook_allow_private=True))
    async with LifespanManager(application):
        yield application
    await truncate_all(db_url)


async def _until(check: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not in time")


async def _deliveries(app: Any) -> list[WebhookDelivery]:
    async with app.starlette.state.db() as db:
        return list(await db.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_signatures_and_the_replay_window() -> None:
    body = b'{"id":"evt_1"}'
    now = 1_800_000_000
    headers = {
        "Jiefen-Webhook-Timestamp": str(now),
        "Jiefen-Webhook-Signature": webhooks.sign("whsec_x", now, body),
    }
    assert webhooks.verify("whsec_x", headers, body, now=now + 10)
    assert not webhooks.verify("whsec_y", headers, body, now=now + 10)  # another secret
    assert not webhooks.verify("whsec_x", headers, body + b" ", now=now + 10)  # altered
    assert not webhooks.verify("whsec_x", headers, body, now=now + 301)  # replayed late
    assert not webhooks.verify("whsec_x", {}, body, now=now)
    assert [webhooks.backoff(n) for n in (1, 2, 3, 8, 20)] == [30, 60, 120, 3600, 3600]


async def test_registering_refuses_bad_addresses(app: Any, client: httpx.AsyncClient) -> None:
    rep = await make_user(app, Role.FIRM_REP)
    await log_in(client, rep.login, rep.password)
    for url, text in (
        ("ftp://example.com/x", "请输入以 https:// 开头的完整地址。"),
        ("http://example.com/x", "请使用 https://"),
        ("https://127.0.0.1/x", "不能是内部网络地址"),
        ("https://10.1.2.3/x", "不能是内部网络地址"),
    ):
        page = await post_form(
            client,
            "/firm/integration",
            {"what": "webhook", "url": url, "events": ["case.status_changed"]},
        )
        assert page.status_code == 400 and text in page.text, url
    async with app.starlette.state.db() as db:
        assert list(await db.scalars(select(WebhookEndpoint))) == []


async def test_events_are_delivered_signed_retried_and_resent(
    hook_app: Any, receiver: Receiver
) -> None:
    app = hook_app
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    claimant = await make_user(app, Role.CONSUMER, phone="13900000771")
    await verify_phone(app, claimant)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await log_in(http, rep.login, rep.password)
        page = await post_form(
            http,
            "/firm/integration",
            {
                "what": "webhook",
                "url": receiver.url,
                "events": ["case.status_changed", "case.firm_responded"],
            },
        )
        assert page.status_code == 200, page.text
        secret = re.search(r'data-testid="webhook-secret".*?value="([^"]+)"', page.text, re.S)
        assert secret is not None
        receiver.secret = secret.group(1)
        assert receiver.secret not in (await http.get("/firm/integration")).text
        # Another firm's case is not told; this firm's acceptance is.
        await make_case(app, claimant, await make_firm(app), status="accepted")
        case = await make_case(app, claimant, firm, status="accepted")
        app.starlette.state.webhooks.wake()
        await _until(lambda: _received(receiver, 2))
        await asyncio.sleep(0.5)
        assert len(receiver.got) == 2  # filed, then accepted: nothing of the draft
        events = [json.loads(body) for _, body, _ in receiver.got]
        assert [e["type"] for e in events] == ["case.status_changed"] * 2
        assert {e["data"]["case_id"] for e in events} == {case.id}
        assert [e["data"]["to_status"] for e in events] == ["submitted", "accepted"]
        assert [h["Jiefen-Webhook-Id"] for h, _, _ in receiver.got] == [e["id"] for e in events]
        # The receiver fails once: tried again after the backoff, with the same id.
        receiver.answers = [503]
        async with app.starlette.state.db() as db:
            row = await db.get(Case, case.id)
            user = await db.get(User, rep.id)
            assert row is not None and user is not None
            await cases.respond_as_firm(db, row, user, kind="agree", offer_fen=None, terms="")
        app.starlette.state.webhooks.wake()
        await _until(lambda: _received(receiver, 3))
        failed = [d for d in await _deliveries(app) if d.event_type == "case.firm_responded"]
        assert failed[0].state == "pending" and failed[0].attempts == 1
        assert failed[0].last_status == 503
        wait = failed[0].next_attempt_at - utcnow()
        assert timedelta(seconds=20) < wait <= timedelta(seconds=30)
        async with app.starlette.state.db() as db:  # the backoff has passed
            await db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == failed[0].id)
                .values(next_attempt_at=utcnow())
            )
            await db.commit()
        app.starlette.state.webhooks.wake()
        await _until(lambda: _received(receiver, 4))
        assert receiver.got[2][0]["Jiefen-Webhook-Id"] == receiver.got[3][0]["Jiefen-Webhook-Id"]
        await _until(lambda: _state(app, failed[0].id, "delivered"))
        # A day of failures: given up.
        receiver.answers = [500]
        async with app.starlette.state.db() as db:
            staff = await db.get(User, admin.id)
            row = await db.get(Case, case.id)
            assert row is not None and staff is not None
            mediator = await make_user(app, Role.MEDIATOR, committee=committee)
            await cases.assign_mediator(db, row, staff, mediator.id)
        app.starlette.state.webhooks.wake()
        await _until(lambda: _received(receiver, 5))
        last = (await _deliveries(app))[-1]
        async with app.starlette.state.db() as db:
            await db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == last.id)
                .values(next_attempt_at=utcnow(), created_at=utcnow() - timedelta(hours=25))
            )
            await db.commit()
        receiver.answers = [500]
        app.starlette.state.webhooks.wake()
        await _until(lambda: _state(app, last.id, "failed"))
        # The log shows it; "resend" sends it again and it is delivered.
        endpoint_id = last.endpoint_id
        log_page = await http.get(f"/firm/integration/webhooks/{endpoint_id}")
        assert log_page.status_code == 200 and 'data-state="failed"' in log_page.text
        resent = await post_form(
            http, f"/firm/integration/webhooks/{endpoint_id}/deliveries/{last.id}/resend"
        )
        assert resent.status_code == 303
        await _until(lambda: _state(app, last.id, "delivered"))
        assert all(ok for _, _, ok in receiver.got)
        # A replay of a delivery, later than the window, is refused by the receiver.
        headers, body, _ = receiver.got[0]
        stamp = int(headers["Jiefen-Webhook-Timestamp"])
        assert not webhooks.verify(receiver.secret, headers, body, now=stamp + 301)
        # Turned off: nothing more is sent.
        off = await post_form(http, f"/firm/integration/webhooks/{endpoint_id}/disable")
        assert off.status_code == 303
        count = len(receiver.got)
        async with app.starlette.state.db() as db:
            row = await db.get(Case, case.id)
            user = await db.get(User, rep.id)
            assert row is not None and user is not None
            await cases.respond_as_firm(db, row, user, kind="agree", offer_fen=None, terms="")
        app.starlette.state.webhooks.wake()
        await asyncio.sleep(1)
        assert len(receiver.got) == count


async def _received(receiver: Receiver, n: int) -> bool:
    return len(receiver.got) >= n


async def _state(app: Any, delivery_id: int, state: str) -> bool:
    async with app.starlette.state.db() as db:
        row = await db.get(WebhookDelivery, delivery_id)
        return row is not None and row.state == state
