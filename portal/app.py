"""create_app(settings) -> the ASGI app: Socket.IO wrapping Starlette."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import socketio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from portal import observability
from portal.accounts import policy as accounts_policy
from portal.accounts import service as accounts
from portal.accounts import views as accounts_views
from portal.agreements import policy as agreements_policy
from portal.agreements import views as agreement_views
from portal.agreements.reminders import FulfilmentLoop
from portal.analytics import guidance_views, library_views, likeness_views
from portal.analytics import policy as analytics_policy
from portal.analytics import views as analytics_views
from portal.analytics.library import LibraryLoop
from portal.analytics.likeness import LikenessIndex
from portal.analytics.rollup import RollupLoop
from portal.api import manage_views as api_manage_views
from portal.api import policy as api_policy
from portal.api import views as api_views
from portal.api.limits import RateLimit
from portal.api.webhooks import WebhookLoop
from portal.audit.digest import AuditDigestLoop
from portal.cases import import_views
from portal.cases import policy as cases_policy
from portal.cases import views as cases_views
from portal.crypto import DataVault
from portal.db import create_engine, create_sessionmaker, session_scope, utcnow
from portal.evidence import policy as evidence_policy
from portal.evidence import service as evidence
from portal.evidence import views as evidence_views
from portal.evidence.log import LogSequencer
from portal.i18n import load_catalogues
from portal.meetings import calendar as meetings_calendar
from portal.meetings import minutes_views
from portal.meetings import policy as meetings_policy
from portal.meetings import views as meetings_views
from portal.meetings.ice import recorder_ice_servers
from portal.meetings.reminders import ReminderLoop
from portal.middleware import (
    CsrfMiddleware,
    DatabaseUnavailableMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    SessionMiddleware,
)
from portal.notify import views as notify_views
from portal.notify.attachments import Attachments
from portal.notify.delivery import LogSmsProvider, OutboxWorker
from portal.orgs import policy as orgs_policy
from portal.orgs import views as orgs_views
from portal.pages import EXCEPTION_HANDLERS
from portal.pages import routes as page_routes
from portal.policy import Policy
from portal.retention import RetentionLoop
from portal.server import drain_sockets
from portal.settings import Settings
from portal.web import create_templates
from portal.workdays import views as workdays_views
from realtime.events import Welcome
from realtime.meetings import MeetingSockets
from realtime.recorder import RecorderHost
from realtime.server import close_socket_server, create_socket_server

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _origins(settings: Settings) -> list[str]:
    """The page's own origin; on loopback both spellings of it, as `make run` serves either."""
    parts = urlsplit(settings.base_url)
    origins = [f"{parts.scheme}://{parts.netloc}"]
    if parts.hostname in ("127.0.0.1", "localhost"):
        port = f":{parts.port}" if parts.port else ""
        origins = [f"{parts.scheme}://{host}{port}" for host in ("127.0.0.1", "localhost")]
    return origins


def create_app(settings: Settings | None = None) -> socketio.ASGIApp:
    settings = settings or Settings.from_env()
    observability.configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.ensure_dirs()
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.db = create_sessionmaker(engine)
        likeness = LikenessIndex(app.state.db)
        app.state.likeness = likeness
        likeness.start()
        outbox = OutboxWorker(
            app.state.db,
            vault=app.state.vault,
            catalogues=app.state.catalogues,
            smtp=settings.smtp,
            base_url=settings.base_url,
            sms=LogSmsProvider(),
            attachments=app.state.attachments,
        )
        app.state.outbox = outbox
        outbox.start()
        reminders = ReminderLoop(app.state.db, on_sent=outbox.wake)
        app.state.reminders = reminders
        reminders.start()
        fulfilment = FulfilmentLoop(app.state.db, on_sent=outbox.wake)
        app.state.fulfilment = fulfilment
        fulfilment.start()
        library_loop = LibraryLoop(app.state.db, app.state.vault)
        app.state.library = library_loop
        library_loop.start()
        rollup_loop = RollupLoop(app.state.db)
        app.state.rollup = rollup_loop
        rollup_loop.start()
        sequencer = LogSequencer(
            app.state.db,
            app.state.log_key,
            tsa=app.state.tsa,
            checkpoint_interval=settings.checkpoint_interval,
        )
        app.state.sequencer = sequencer
        sequencer.start()
        sweeper = app.state.meeting_sockets.sweeper
        sweeper.start()
        recorder = RecorderHost(
            app.state.meeting_sockets,
            blobs=app.state.blobs,
            root=settings.recordings_dir,
            limit=settings.recording_limit,
            redis_url=settings.redis_url,
            redis_prefix=settings.redis_prefix,
            ice=lambda: recorder_ice_servers(settings, utcnow()),
        )
        app.state.meeting_sockets.recorder = recorder
        recorder.start()
        app.state.api_rate = RateLimit(settings)
        webhooks = WebhookLoop(
            app.state.db, app.state.vault, allow_private=settings.webhook_allow_private
        )
        app.state.webhooks = webhooks
        webhooks.start()
        audit_digests = AuditDigestLoop(app.state.db, settings.audit_retention_days)
        app.state.audit_digests = audit_digests
        audit_digests.start()
        retention = RetentionLoop(app.state.db, app.state.blobs, settings)
        app.state.retention = retention
        retention.start()
        try:
            yield
        finally:
            await retention.stop()
            await audit_digests.stop()
            await webhooks.stop()
            await app.state.api_rate.close()
            await recorder.stop()
            await sweeper.stop()
            await sequencer.stop()
            await rollup_loop.stop()
            await library_loop.stop()
            await fulfilment.stop()
            await reminders.stop()
            await outbox.stop()
            await outbox.finish(5.0)  # what the last requests queued goes out now
            await close_socket_server(app.state.sio)
            await likeness.stop()
            await engine.dispose()

    starlette = Starlette(
        routes=[
            *page_routes,
            *accounts_views.routes,
            *orgs_views.routes,
            *import_views.routes,
            *cases_views.routes,
            *evidence_views.routes,
            *meetings_views.routes,
            *minutes_views.routes,
            *agreement_views.routes,
            *notify_views.routes,
            *workdays_views.routes,
            *analytics_views.routes,
            *likeness_views.routes,
            *library_views.routes,
            *guidance_views.routes,
            *api_views.routes,
            *api_manage_views.routes,
            *observability.routes,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeadersMiddleware, settings=settings),
            Middleware(DatabaseUnavailableMiddleware),
            Middleware(CsrfMiddleware, settings=settings, exempt=("/api/",)),
            Middleware(SessionMiddleware, settings=settings),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    starlette.state.settings = settings
    # Outermost, so that it times everything the portal does for a request.
    metrics = observability.Metrics()
    starlette.state.metrics = metrics
    starlette.add_middleware(
        observability.MetricsMiddleware,
        metrics=metrics,
        templates=observability.route_templates(starlette.routes),
    )
    starlette.state.vault = DataVault(settings.data_key)
    settings.ensure_dirs()
    starlette.state.blobs = evidence.blob_store(settings)
    starlette.state.log_key = evidence.log_key(settings)
    starlette.state.tsa = evidence.tsa_config(settings)
    starlette.state.catalogues = load_catalogues()
    starlette.state.templates = create_templates(settings)
    # Files that emails carry, made at send time by the feature that owns them.
    starlette.state.attachments = Attachments([meetings_calendar.ATTACHMENTS])
    starlette.state.policy = Policy(
        [
            accounts_policy.RULES,
            agreements_policy.RULES,
            api_policy.RULES,
            analytics_policy.RULES,
            orgs_policy.RULES,
            cases_policy.RULES,
            evidence_policy.RULES,
            meetings_policy.RULES,
        ]
    )

    async def authenticate(cookie_header: str) -> Welcome | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except Exception:
            return None
        morsel = jar.get(settings.session_cookie_name)
        token = accounts.unsign_token(settings, morsel.value if morsel else None)
        if token is None:
            return None
        async with session_scope(starlette.state.db) as db:
            found = await accounts.resolve_session(db, settings, token)
        if found is None:
            return None
        user = found[0]
        return Welcome(user_id=user.id, role=user.role, display_name=user.display_name)

    meetings = MeetingSockets(
        sessions=lambda: starlette.state.db,
        policy=starlette.state.policy,
        catalogues=starlette.state.catalogues,
        default_locale=settings.default_locale,
    )
    sio = create_socket_server(
        authenticate,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
        allowed_origins=_origins(settings),
        features=[meetings],
    )
    starlette.state.sio = sio
    starlette.state.meeting_sockets = meetings
    # The request id wraps Starlette's own error handling, so even a 500 carries it.
    app: Any = socketio.ASGIApp(
        sio, other_asgi_app=RequestIdMiddleware(starlette), socketio_path="socket.io"
    )
    app.starlette = starlette
    # portal.server calls it on SIGTERM, once no new connection comes in.
    app.jiefen_drain = lambda seconds: drain_sockets(sio, seconds)
    return app
