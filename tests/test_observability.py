"""Health and metrics: /healthz, /readyz naming each dependency (a real Redis, a dead one, an
unwritable store), and /metrics with route-template latency and backlogs read from the
database; only loopback or the metrics token may scrape."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from portal.app import create_app
from portal.notify.models import Notification
from portal.policy import Role
from tests.conftest import free_port, log_in, make_settings, redis_available
from tests.factories import make_case, make_committee, make_firm, make_user, verify_phone


def client_for(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_healthz_and_readyz(app: Any, client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["storage"] == "ok"
    assert ready.headers["cache-control"] == "no-store"


async def test_readyz_names_what_is_down(settings: Any, tmp_path: Path) -> None:
    # A Redis that answers, then one that does not; and a store that cannot be written.
    if redis_available():
        live = create_app(replace(settings, redis_url="redis://127.0.0.1:6379/0"))
        async with LifespanManager(live), client_for(live) as c:
            answer = await c.get("/readyz")
            assert answer.status_code == 200 and answer.json()["checks"]["redis"] == "ok"
    dead_port = free_port()
    dead = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{dead_port}/0"))
    async with LifespanManager(dead), client_for(dead) as c:
        answer = await c.get("/readyz")
        assert answer.status_code == 503
        checks = answer.json()["checks"]
        assert checks["database"] == "ok" and checks["redis"].startswith("failed")
        # Its own storage made unwritable: a file where the blob store's tmp directory was.
        tmp = dead.starlette.state.blobs.tmp_dir
        tmp.rename(tmp.with_name("tmp-away"))
        tmp.write_bytes(b"")
        try:
            answer = await c.get("/readyz")
            assert answer.json()["checks"]["storage"].startswith("failed")
        finally:
            tmp.unlink()
            tmp.with_name("tmp-away").rename(tmp)


async def test_metrics_count_requests_by_route_and_read_backlogs(
    app: Any, client: httpx.AsyncClient
) -> None:
    await make_committee(app)
    consumer = await make_user(app, Role.CONSUMER, phone="13900000777")
    await verify_phone(app, consumer)
    firm = await make_firm(app)
    case = await make_case(app, consumer, firm)
    await log_in(client, consumer.login, consumer.password)
    for _ in range(3):
        assert (await client.get(f"/cases/{case.id}")).status_code == 200
    assert (await client.get("/no/such/page")).status_code == 404
    async with app.starlette.state.db() as db:
        pending = await db.scalar(
            Notification.__table__.select()
            .with_only_columns(Notification.id)
            .where(Notification.status == "pending")
            .limit(1)
        )
    scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    # Labelled by the route's template, never by the path with its id.
    detail = re.search(
        r'jiefen_http_request_duration_seconds_count\{method="GET",route="/cases/\{case_id:int\}",'
        r'status="2xx"\} (\d+)',
        text,
    )
    assert detail and float(detail.group(1)) == 3, text[:2000]
    assert f"/cases/{case.id}" not in text
    assert 'route="unmatched",status="4xx"' in text
    assert re.search(r"^jiefen_cases_overdue \d", text, re.M)
    backlog = re.search(r"^jiefen_notifications_pending (\d+)", text, re.M)
    assert backlog and (float(backlog.group(1)) > 0) == (pending is not None)
    for name in (
        "jiefen_webhooks_pending",
        "jiefen_evidence_leaves",
        "jiefen_socket_connections",
        "jiefen_meeting_rooms_active",
        "jiefen_chat_messages_stored",
        "jiefen_audit_events_undigested",
        "jiefen_process_sockets",
    ):
        assert re.search(rf"^{name} \d", text, re.M), name


async def test_metrics_only_for_loopback_or_the_token(settings: Any) -> None:
    app = create_app(settings)
    async with LifespanManager(app), client_for(app, host="203.0.113.9") as outside:
        assert (await outside.get("/metrics")).status_code == 404
        assert (await outside.get("/healthz")).status_code == 200
    guarded = create_app(replace(settings, metrics_token="s3cret"))
    async with (
        LifespanManager(guarded),
        client_for(guarded, host="203.0.113.9") as outside,
        client_for(guarded) as inside,
    ):
        assert (await outside.get("/metrics")).status_code == 404
        wrong = {"Authorization": "Bearer nope"}
        assert (await outside.get("/metrics", headers=wrong)).status_code == 404
        right = {"Authorization": "Bearer s3cret"}
        assert (await outside.get("/metrics", headers=right)).status_code == 200
        # With a token set, loopback needs it too.
        assert (await inside.get("/metrics")).status_code == 404


def test_settings_read_the_metrics_token(tmp_path: Path) -> None:
    from portal.settings import Settings

    env = {"VAR_DIR": str(tmp_path), "METRICS_TOKEN": "abc", "LOG_FORMAT": "JSON"}
    assert Settings.from_env(env).metrics_token == "abc"
    assert Settings.from_env(env).log_format == "json"
    assert Settings.from_env({"VAR_DIR": str(tmp_path)}).log_format == "text"
    assert make_settings("sqlite+aiosqlite:///x.db", tmp_path).metrics_token is None


async def test_each_request_is_logged_by_route_without_personal_data(
    app: Any, client: httpx.AsyncClient, caplog: Any
) -> None:
    import logging

    consumer = await make_user(app, Role.CONSUMER, phone="13900000778")
    await log_in(client, consumer.login, consumer.password)
    with caplog.at_level(logging.INFO, logger="jiefen.access"):
        answer = await client.get("/cases", params={"q": "张三丰"})
    records = [r for r in caplog.records if r.name == "jiefen.access"]
    assert records, "no access log line"
    line = records[-1]
    assert line.route == "/cases" and line.status == 200 and line.method == "GET"
    assert line.request_id == answer.headers["x-request-id"]
    assert line.user_id == consumer.id
    assert "张三丰" not in line.getMessage() and "13900000778" not in line.getMessage()


def test_json_logs_carry_the_fields() -> None:
    import json
    import logging

    from portal.observability import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        root.handlers = []
        configure_logging("INFO", "json")
        handler = logging.getLogger().handlers[0]
        record = logging.LogRecord(
            "jiefen.access", logging.INFO, __file__, 1, "GET %s", ("/x",), None
        )
        record.request_id, record.user_id, record.route = "abc", 7, "/x"
        out = json.loads(handler.format(record))
        assert out["message"] == "GET /x" and out["level"] == "INFO"
        assert out["logger"] == "jiefen.access" and "time" in out
        assert (out["request_id"], out["user_id"], out["route"]) == ("abc", 7, "/x")
    finally:
        root.handlers = saved
