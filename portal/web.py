"""Templating (Jinja2 + i18n + fragments), is_htmx, response helpers, forms, flash messages."""

from __future__ import annotations

import gettext
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2_fragments.starlette import Jinja2Blocks
from markupsafe import Markup, escape
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import NoMatchFound, Route

from portal.crypto import derive_key
from portal.db import session_scope
from portal.i18n import HTML_LANG, LANGUAGE_NAMES, Msg, format_datetime, format_money
from portal.policy import ANONYMOUS, Identity
from portal.settings import SUPPORTED_LOCALES, Settings
from portal.validators import ValidationError

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
FLASH_COOKIE = "jiefen_flash"
LANG_COOKIE = "jiefen_lang"
TEXT_COOKIE = "jiefen_text"


# -- request state --------------------------------------------------------------------------


def is_htmx(request: Request) -> bool:
    """True for an htmx request that wants a fragment (not a history restore of a full page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def identity(request: Request) -> Identity:
    return cast(Identity, getattr(request.state, "identity", ANONYMOUS))


def translations(request: Request) -> gettext.NullTranslations:
    catalogues = request.app.state.catalogues
    return cast(gettext.NullTranslations, catalogues[locale_of(request)])


def locale_of(request: Request) -> str:
    return cast(str, getattr(request.state, "locale", request.app.state.settings.default_locale))


def tr(request: Request, message: Msg | str) -> str:
    """Translate a message into the request's language."""
    if isinstance(message, Msg):
        return message.render(translations(request))
    return translations(request).gettext(message)


def require(request: Request, permission: str, resource: object) -> None:
    """Ask the policy; a refusal becomes a login redirect (anonymous) or a 404 (everyone else)."""
    request.app.state.policy.require(identity(request), permission, resource)


def permits(request: Request, permission: str, resource: object) -> bool:
    return bool(request.app.state.policy.permits(identity(request), permission, resource))


@asynccontextmanager
async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for one view; if it queued email or SMS, or wrote evidence-log leaves, the
    outbox worker or the log's sequencer is woken afterwards, rather than at its next tick.
    Live events its transactions queued (``portal.live``) are published once it is done."""
    from portal.evidence.log import LOG_PENDING
    from portal.live import committed, publish
    from portal.notify.service import OUTBOX_PENDING

    async with session_scope(request.app.state.db) as session:
        yield session
    live = committed(session)
    sio = getattr(request.app.state, "sio", None)
    if live and sio is not None:
        await publish(sio, live)
    outbox = getattr(request.app.state, "outbox", None)
    if outbox is not None and session.info.pop(OUTBOX_PENDING, False):
        outbox.wake()
    sequencer = getattr(request.app.state, "sequencer", None)
    if sequencer is not None and session.info.pop(LOG_PENDING, False):
        sequencer.wake()


async def current_user(request: Request, db: AsyncSession) -> Any:
    """The logged-in user, loaded into ``db`` (the request's copy stays detached, for pages)."""
    from portal.errors import NotFound

    user_id = identity(request).user_id
    user = await db.get(request.state.user.__class__, user_id) if user_id else None
    if user is None:
        raise NotFound
    return user


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- templates ------------------------------------------------------------------------------


# Jinja's newstyle i18n wraps these and applies the %(name)s variables itself.
# A page calls these a hundred times: render() puts the request's catalogue ("_catalogue")
# and locale in the context once, rather than each call finding them through the request.
def _catalogue(ctx: Context) -> gettext.NullTranslations:
    found = ctx.parent.get("_catalogue")  # a plain dict: Context.get costs ten times more
    return found if found is not None else translations(ctx["request"])


@pass_context
def _gettext(ctx: Context, message: str) -> str:
    return _catalogue(ctx).gettext(message)


@pass_context
def _ngettext(ctx: Context, singular: str, plural: str, n: int) -> str:
    return _catalogue(ctx).ngettext(singular, plural, n)


@pass_context
def _translate_msg(ctx: Context, message: Msg | str | None) -> str:
    if message is None:
        return ""
    if isinstance(message, Msg):
        return message.render(_catalogue(ctx))
    return _catalogue(ctx).gettext(message)


@pass_context
def _money(ctx: Context, fen: int | None) -> str:
    return format_money(fen, ctx.parent.get("locale") or locale_of(ctx["request"]))


@pass_context
def _datetime(ctx: Context, value: Any) -> str:
    request = ctx["request"]
    return format_datetime(value, locale_of(request), request.app.state.settings.time_zone)


def url_path(app: Any, name: str, **params: Any) -> str:
    """``app.url_path_for``, but by a lookup of the route's name instead of trying every route
    (Starlette raises and catches ``NoMatchFound`` once per route passed; a list page builds
    dozens of links)."""
    index: dict[str, Any] | None = getattr(app.state, "route_index", None)
    if index is None:
        index = {}
        for route in app.routes:
            name_of = getattr(route, "name", None)
            if isinstance(route, Route) and name_of and name_of not in index:
                index[name_of] = route
        app.state.route_index = index
    route = index.get(name)
    if route is not None:
        convertors = route.param_convertors
        if params.keys() == convertors.keys():
            # What url_path_for does for a route without a mount, minus its generality.
            try:
                return str(
                    route.path_format.format(
                        **{k: convertors[k].to_string(v) for k, v in params.items()}
                    )
                )
            except (AssertionError, ValueError, TypeError):
                pass
        try:
            return str(route.url_path_for(name, **params))
        except NoMatchFound:
            pass
    return str(app.url_path_for(name, **params))


@pass_context
def _options(ctx: Context, pairs: Any, selected: Any = None, translate: bool = False) -> Markup:
    """``<option>`` elements for (value, label) pairs, built in one go: a firm filter has
    hundreds, and a Jinja loop costs several times more per option."""
    catalogue = _catalogue(ctx) if translate else None
    parts = []
    for value, label in pairs:
        text = label
        if catalogue is not None:
            text = label.render(catalogue) if isinstance(label, Msg) else catalogue.gettext(label)
        mark = " selected" if value == selected else ""
        parts.append(f'<option value="{escape(value)}"{mark}>{escape(text)}</option>')
    # Every value and label above went through escape(); Markup.format would do the same at
    # several times the cost.
    return Markup("".join(parts))  # noqa: S704


@pass_context
def _url(ctx: Context, name: str, **params: Any) -> str:
    return url_path(ctx["request"].app, name, **params)


def create_templates(settings: Settings) -> Jinja2Blocks:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True
    )
    env.filters.update(t=_translate_msg, money=_money, datetime=_datetime)
    env.globals.update(
        url=_url,
        options=_options,
        msg=lambda msgid, params=None: Msg(msgid, dict(params or {})),
        LANGUAGE_NAMES=LANGUAGE_NAMES,
        HTML_LANG=HTML_LANG,
        SUPPORTED_LOCALES=SUPPORTED_LOCALES,
    )
    return Jinja2Blocks(env=env)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    block: str | None = None,
) -> Response:
    """Render a screen; an htmx request gets only ``block`` of it when one is named."""
    state = request.state
    locale = locale_of(request)
    full_context = {
        "_catalogue": request.app.state.catalogues[locale],
        "user": getattr(state, "user", None),
        "identity": identity(request),
        "csrf_token": getattr(state, "csrf_token", ""),
        "locale": locale,
        "large_text": getattr(state, "large_text", False),
        "flash": getattr(state, "flash", None),
        "request_id": getattr(state, "request_id", ""),
        "csp_nonce": getattr(state, "csp_nonce", ""),
        "permits": lambda permission, resource: permits(request, permission, resource),
        **(context or {}),
    }
    templates: Jinja2Blocks = request.app.state.templates
    if block is not None and is_htmx(request):
        return templates.TemplateResponse(
            request, template, full_context, status_code=status_code, block_name=block
        )
    return templates.TemplateResponse(request, template, full_context, status_code=status_code)


def redirect(request: Request, name: str, *, query: str = "", **params: Any) -> Response:
    """Post/redirect/get. htmx follows HX-Redirect; plain forms follow 303."""
    url = url_path(request.app, name, **params) + (f"?{query}" if query else "")
    return redirect_to(request, url)


def redirect_to(request: Request, url: str) -> Response:
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a local path may be a redirect target (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


# -- flash messages -------------------------------------------------------------------------


def _flash_serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(derive_key(settings.secret_key, "jiefen/flash").hex(), salt="flash")


def flash(request: Request, response: Response, message: Msg, kind: str = "success") -> Response:
    settings: Settings = request.app.state.settings
    value = _flash_serializer(settings).dumps({"m": message.msgid, "p": message.params, "k": kind})
    response.set_cookie(
        FLASH_COOKIE,
        value,
        max_age=60,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    return response


def read_flash(settings: Settings, cookie: str | None) -> tuple[Msg, str] | None:
    if not cookie:
        return None
    try:
        data = _flash_serializer(settings).loads(cookie)
        return Msg(str(data["m"]), dict(data.get("p") or {})), str(data.get("k", "success"))
    except (BadSignature, KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


# -- forms ----------------------------------------------------------------------------------


class Form:
    """Parsed form input, cleaned values and per-field errors (shown next to each field)."""

    def __init__(self, data: FormData | Mapping[str, Any] | None = None) -> None:
        self.data: Mapping[str, Any] = data if data is not None else {}
        self.errors: dict[str, Msg] = {}
        self.cleaned: dict[str, Any] = {}

    def value(self, name: str, default: str = "") -> str:
        raw = self.data.get(name, default)
        return raw if isinstance(raw, str) else default

    def values(self, name: str) -> list[str]:
        getlist = getattr(self.data, "getlist", None)
        if getlist is None:
            raw = self.data.get(name)
            return [raw] if isinstance(raw, str) else list(raw or [])
        return [v for v in getlist(name) if isinstance(v, str)]

    def clean(self, name: str, validator: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            value = validator(self.value(name), *args, **kwargs)
        except ValidationError as exc:
            self.errors[name] = exc.message
            return None
        self.cleaned[name] = value
        return value

    def validate(self) -> bool:
        """Subclasses clean their fields here; the base form accepts what it was given."""
        return self.valid

    def add_error(self, name: str | None, message: Msg) -> None:
        self.errors[name or "__all__"] = message

    @property
    def valid(self) -> bool:
        return not self.errors


async def read_form(request: Request, max_fields: int = 200) -> FormData:
    return await request.form(max_files=0, max_fields=max_fields)
