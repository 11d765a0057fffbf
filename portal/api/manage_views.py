"""The firm's integration page: API tokens (made, shown once, revoked) and the one-click
mediation link with its QR code; and the API's readable reference."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import segno
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.accounts.models import User
from portal.api import service, webhooks
from portal.api.models import ApiToken, WebhookEndpoint
from portal.api.policy import INTEGRATION
from portal.cases.links import FirmLink, link_url
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.orgs.categories import CATEGORIES
from portal.orgs.models import Firm
from portal.web import (
    Form,
    current_user,
    db_session,
    flash,
    identity,
    read_form,
    redirect,
    render,
    require,
)

LIFETIME_LABELS = {
    "30": _l("30 days"),
    "90": _l("90 days"),
    "365": _l("One year"),
    "0": _l("Until revoked"),
}


class TokenForm(Form):
    def validate(self) -> bool:
        if not self.value("name").strip():
            self.add_error("name", _l("Give the token a name."))
        if not self.values("scopes"):
            self.add_error("scopes", _l("Choose at least one permission."))
        if self.value("days") not in LIFETIME_LABELS:
            self.add_error("days", _l("Choose one of the options."))
        return self.valid


def _link(request: Request, firm_id: int, category: str) -> dict[str, str]:
    url = link_url(request.app.state.settings, FirmLink(firm_id, category))
    qr = segno.make(url, error="m")
    return {"url": url, "qr": qr.svg_data_uri(scale=5, border=2)}


class WebhookForm(Form):
    def validate(self) -> bool:
        if not self.value("url").strip():
            self.add_error("url", _l("Enter a full https:// address."))
        if not self.values("events"):
            self.add_error("events", _l("Choose at least one kind of event."))
        return self.valid


async def integration(request: Request) -> Response:
    require(request, "view", INTEGRATION)
    form = TokenForm({"days": "90"})
    hook_form = WebhookForm()
    issued: service.IssuedToken | None = None
    new_hook: webhooks.NewEndpoint | None = None
    category = request.query_params.get("category", "")
    if category not in CATEGORIES:
        category = ""
    async with db_session(request) as db:
        user = await current_user(request, db)
        data = await read_form(request) if request.method == "POST" else None
        if data is not None and data.get("what") == "webhook":
            require(request, "add_webhook", INTEGRATION)
            hook_form = WebhookForm(data)
            if hook_form.validate():
                try:
                    new_hook = await webhooks.add_endpoint(
                        db,
                        request.app.state.vault,
                        user,
                        url=hook_form.value("url"),
                        events=hook_form.values("events"),
                        allow_private=request.app.state.settings.webhook_allow_private,
                    )
                except DomainError as exc:
                    hook_form.add_error(exc.field, exc.message)
                else:
                    hook_form = WebhookForm()
        elif data is not None:
            require(request, "create_token", INTEGRATION)
            form = TokenForm(data)
            if form.validate():
                try:
                    issued = await service.create_token(
                        db,
                        user,
                        name=form.value("name"),
                        scopes=form.values("scopes"),
                        days=int(form.value("days")),
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    form = TokenForm({"days": "90"})
        firm = await db.get(Firm, user.firm_id or 0)
        if firm is None:
            raise NotFound
        tokens = await service.list_tokens(db, firm.id)
        hooks = await webhooks.endpoints(db, firm.id)
    response = render(
        request,
        "api/integration.html",
        {
            "firm": firm,
            "form": form,
            "issued": issued,
            "tokens": tokens,
            "now": utcnow(),
            "scopes": service.SCOPES,
            "lifetimes": LIFETIME_LABELS,
            "categories": CATEGORIES,
            "category": category,
            "link": _link(request, firm.id, category),
            "hook_form": hook_form,
            "new_hook": new_hook,
            "hooks": hooks,
            "events": webhooks.EVENTS,
        },
        status_code=400 if form.errors or hook_form.errors else 200,
    )
    # The token's secret is on this page only: never cached, never shown again.
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke(request: Request) -> Response:
    async with db_session(request) as db:
        token = await db.get(ApiToken, request.path_params["token_id"])
        if token is None:
            raise NotFound
        require(request, "revoke", token)
        user = await current_user(request, db)
        try:
            await service.revoke_token(db, token, user)
        except DomainError as exc:
            return flash(request, redirect(request, "api.integration"), exc.message, "error")
    return flash(request, redirect(request, "api.integration"), _l("The token is revoked."))


async def webhook_log(request: Request) -> Response:
    """An endpoint's deliveries, newest first, each with a button to send it again."""
    async with db_session(request) as db:
        endpoint = await webhooks.get_endpoint(db, request.path_params["webhook_id"])
        require(request, "view", endpoint)
        rows = await webhooks.deliveries(db, endpoint)
    return render(
        request,
        "api/webhook.html",
        {"endpoint": endpoint, "deliveries": rows, "events": webhooks.EVENTS},
    )


WebhookCall = Callable[[AsyncSession, WebhookEndpoint, User], Awaitable[object]]


async def _webhook_action(
    request: Request, permission: str, call: WebhookCall, done: Msg
) -> Response:
    """Check the permission on the endpoint, do ``call``, and go back to its log."""
    async with db_session(request) as db:
        endpoint = await webhooks.get_endpoint(db, request.path_params["webhook_id"])
        require(request, permission, endpoint)
        user = await current_user(request, db)
        back = redirect(request, "api.webhook", webhook_id=endpoint.id)
        try:
            await call(db, endpoint, user)
        except DomainError as exc:
            return flash(request, back, exc.message, "error")
    request.app.state.webhooks.wake()
    return flash(request, back, done)


async def webhook_resend(request: Request) -> Response:
    async def call(db: AsyncSession, endpoint: WebhookEndpoint, user: User) -> object:
        return await webhooks.resend(db, endpoint, request.path_params["delivery_id"], user)

    return await _webhook_action(request, "resend", call, _l("It will be sent again now."))


async def webhook_disable(request: Request) -> Response:
    async def call(db: AsyncSession, endpoint: WebhookEndpoint, user: User) -> object:
        await webhooks.disable_endpoint(db, endpoint, user)
        return None

    return await _webhook_action(request, "disable", call, _l("The webhook is turned off."))


async def qr_png(request: Request) -> Response:
    """The link's QR code as a PNG, for print and app stores."""
    require(request, "make_link", INTEGRATION)
    who = identity(request)
    category = request.query_params.get("category", "")
    if category not in CATEGORIES:
        category = ""
    url = link_url(request.app.state.settings, FirmLink(who.firm_id or 0, category))
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="png", scale=10, border=4)
    return Response(
        buffer.getvalue(),
        media_type="image/png",
        headers={"Content-Disposition": 'attachment; filename="jiefen-mediation-link.png"'},
    )


async def reference(request: Request) -> Response:
    """The API's reference, readable, from the same document as /api/v1/openapi.json."""
    from portal.api.openapi import build

    document = build(request.app.state.settings.base_url)
    return render(
        request,
        "api/reference.html",
        {"doc": document, "scopes": service.SCOPES, "events": webhooks.EVENTS},
    )


routes = [
    Route("/firm/integration", integration, methods=["GET", "POST"], name="api.integration"),
    Route(
        "/firm/integration/tokens/{token_id:int}/revoke",
        revoke,
        methods=["POST"],
        name="api.revoke",
    ),
    Route("/firm/integration/qr.png", qr_png, name="api.qr"),
    Route("/firm/integration/webhooks/{webhook_id:int}", webhook_log, name="api.webhook"),
    Route(
        "/firm/integration/webhooks/{webhook_id:int}/deliveries/{delivery_id:int}/resend",
        webhook_resend,
        methods=["POST"],
        name="api.webhook_resend",
    ),
    Route(
        "/firm/integration/webhooks/{webhook_id:int}/disable",
        webhook_disable,
        methods=["POST"],
        name="api.webhook_disable",
    ),
    Route("/developers/api", reference, name="api.reference"),
]
