"""Health and metrics for operators: ``/healthz`` (the process answers), ``/readyz`` (it can
serve: database, Redis when configured, storage writable) and ``/metrics`` (Prometheus text).

Request latency is measured by an ASGI middleware, labelled by the route's template
(``/cases/{case_id:int}``, never the path with its ids) and the status class. The other figures
are read when scraped: queue backlogs (notifications, webhooks, evidence-log leaves waiting to
be sequenced), open cases past their deadlines, live sessions and their sockets, running
imports. ``/metrics`` answers loopback clients, or anyone with ``METRICS_TOKEN`` as a bearer
token; everyone else gets 404. Each app has its own registry (several apps may live in one
process, as in the tests). With several worker processes, each is scraped on its own port.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.audit.models import AuditEvent
from portal.cases.lifecycle import OPEN_STATUSES
from portal.cases.models import Case, ImportBatch
from portal.db import session_scope
from portal.evidence.models import LogLeaf
from portal.meetings.models import Meeting, MeetingConnection, MeetingMessage, Participant
from portal.notify.models import Notification

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
access_log = logging.getLogger("jiefen.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str, fmt: str) -> None:
    """The root logger's format: text for people, or JSON a line (python-json-logger) with
    the time, level, logger, message and the record's own fields (request id, user id,
    route, status, milliseconds for the access log)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


# Seconds: from a cached page to a large upload.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The app's registry and its instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "jiefen_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status class.",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.gauges = {
            name: Gauge(name, doc, registry=self.registry)
            for name, doc in (
                ("jiefen_notifications_pending", "Email and text messages waiting to be sent."),
                ("jiefen_notifications_failed", "Email and text messages given up on."),
                ("jiefen_webhooks_pending", "Webhook deliveries waiting (first try or retry)."),
                ("jiefen_webhooks_failed", "Webhook deliveries given up after a day."),
                ("jiefen_evidence_leaves_pending", "Evidence-log leaves not yet sequenced."),
                ("jiefen_evidence_leaves", "Evidence-log leaves sequenced (the log's size)."),
                ("jiefen_cases_overdue", "Open cases past their closing deadline."),
                ("jiefen_cases_firm_silent", "Accepted cases whose firm missed its answer date."),
                ("jiefen_sessions_live", "Mediation sessions in progress."),
                ("jiefen_socket_connections", "Sockets joined to a session, all processes."),
                ("jiefen_imports_running", "Batch imports being checked or imported."),
                ("jiefen_meeting_rooms_active", "Rooms (joint, caucus) with people in them."),
                ("jiefen_chat_messages_stored", "Chat messages stored, all sessions (grows)."),
                ("jiefen_audit_events_undigested", "Audit events not yet in the evidence log."),
                ("jiefen_process_sockets", "Socket.IO connections held by this process."),
            )
        }

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, f"{status // 100}xx").observe(seconds)


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[Any, str]:
    """Endpoint -> its path template, for labelling (Starlette puts the endpoint it chose
    into the request's scope)."""
    found: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Route):
            found.setdefault(route.endpoint, prefix + route.path)
        elif isinstance(route, Mount):
            found.setdefault(route.app, prefix + route.path)
            found.update(route_templates(route.routes or [], prefix + route.path))
    return found


class MetricsMiddleware:
    """Times each HTTP request; the label is the matched route's template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: dict[Any, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            endpoint = scope.get("endpoint")
            if endpoint is None and "app" in scope:  # a mount, such as /static
                endpoint = scope.get("app")
            route = self.templates.get(endpoint, "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["method"], route, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state", {})
                identity = state.get("identity")
                # No path or query string (a search may hold a name): the route's template.
                access_log.info(
                    "%s %s %s %.1f ms",
                    scope["method"],
                    route,
                    status,
                    seconds * 1000,
                    extra={
                        "request_id": state.get("request_id"),
                        "user_id": getattr(identity, "user_id", None),
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 1),
                    },
                )


# -- the endpoints ----------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """The process is up and its event loop answers. Nothing else is asked."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def _check_database(request: Request) -> None:
    async with session_scope(request.app.state.db) as db:
        await db.execute(text("SELECT 1"))


async def _check_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


def _check_storage(request: Request) -> None:
    """A file can be written (and removed) where uploads and blobs go."""
    directory = request.app.state.blobs.tmp_dir
    probe = directory / f".ready-{secrets.token_hex(8)}"
    probe.write_bytes(b"ok")
    probe.unlink()


async def readyz(request: Request) -> Response:
    """Can this process serve? Each dependency's state; 503 when one is down."""
    settings = request.app.state.settings
    checks: dict[str, Any] = {"database": _check_database(request)}
    if settings.redis_url:
        checks["redis"] = _check_redis(settings.redis_url)
    checks["storage"] = asyncio.to_thread(_check_storage, request)
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, timeout=5)
            results[name] = "ok"
        except Exception as exc:  # any failure is "not ready", named by its kind only
            results[name] = f"failed: {type(exc).__name__}"
    ready = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": results},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def _may_scrape(request: Request) -> bool:
    token = request.app.state.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    return bool(request.client and request.client.host in LOOPBACK)


async def _read_gauges(request: Request, metrics: Metrics) -> None:
    """The figures read from the database, as of this scrape."""
    from portal.api.models import WebhookDelivery
    from portal.cases.service import today_in_china

    today = today_in_china()
    open_statuses = [s.value for s in OPEN_STATUSES]

    def count(*where: Any, model: Any = None) -> Any:
        return select(func.count()).select_from(model).where(*where).scalar_subquery()

    query = select(
        count(Notification.status == "pending", model=Notification),
        count(Notification.status == "failed", model=Notification),
        count(WebhookDelivery.state == "pending", model=WebhookDelivery),
        count(WebhookDelivery.state == "failed", model=WebhookDelivery),
        count(LogLeaf.seq.is_(None), model=LogLeaf),
        select(func.coalesce(func.max(LogLeaf.seq) + 1, 0)).scalar_subquery(),
        count(Case.status.in_(open_statuses), Case.close_due < today, model=Case),
        count(
            Case.status.in_(("accepted", "assigned", "in_mediation")),
            Case.firm_response.is_(None),
            Case.firm_response_due < today,
            model=Case,
        ),
        count(Meeting.status == "open", model=Meeting),
        select(func.count()).select_from(MeetingConnection).scalar_subquery(),
        count(ImportBatch.status.in_(("checking", "importing")), model=ImportBatch),
        select(func.count())
        .select_from(
            select(Participant.meeting_id, Participant.room)
            .join(Meeting, Meeting.id == Participant.meeting_id)
            .where(Meeting.status == "open", Participant.state == "admitted")
            .distinct()
            .subquery()
        )
        .scalar_subquery(),
        select(func.count()).select_from(MeetingMessage).scalar_subquery(),
        count(AuditEvent.digest_id.is_(None), model=AuditEvent),
    )
    async with session_scope(request.app.state.db) as db:
        values = (await db.execute(query)).one()
    names = [
        "jiefen_notifications_pending",
        "jiefen_notifications_failed",
        "jiefen_webhooks_pending",
        "jiefen_webhooks_failed",
        "jiefen_evidence_leaves_pending",
        "jiefen_evidence_leaves",
        "jiefen_cases_overdue",
        "jiefen_cases_firm_silent",
        "jiefen_sessions_live",
        "jiefen_socket_connections",
        "jiefen_imports_running",
        "jiefen_meeting_rooms_active",
        "jiefen_chat_messages_stored",
        "jiefen_audit_events_undigested",
    ]
    for name, value in zip(names, values, strict=True):
        metrics.gauges[name].set(int(value or 0))
    sio = getattr(request.app.state, "sio", None)
    metrics.gauges["jiefen_process_sockets"].set(len(sio.eio.sockets) if sio else 0)


async def metrics_view(request: Request) -> Response:
    """Prometheus text exposition; 404 to anyone not allowed to scrape."""
    if not _may_scrape(request):
        return Response("Not Found", status_code=404, media_type="text/plain")
    metrics: Metrics = request.app.state.metrics
    await _read_gauges(request, metrics)
    return Response(
        generate_latest(metrics.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route("/healthz", healthz, name="ops.healthz"),
    Route("/readyz", readyz, name="ops.readyz"),
    Route("/metrics", metrics_view, name="ops.metrics"),
]
