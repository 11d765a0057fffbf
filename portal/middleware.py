"""Pure ASGI middleware: request ids, security headers, CSRF, and the session/locale state.

Order (outermost first): RequestId (around Starlette itself, so error pages carry the id) →
SecurityHeaders → DatabaseUnavailable → Csrf → Session. CSRF is checked before any
database work (as Warehouse does), from cookies alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.accounts import service as accounts
from portal.crypto import derive_key
from portal.db import session_scope
from portal.i18n import negotiate_locale
from portal.settings import Settings
from portal.web import FLASH_COOKIE, LANG_COOKIE, TEXT_COOKIE, read_flash

CSRF_COOKIE = "jiefen_csrf"
CSRF_HEADER = b"x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
MAX_FORM_BUFFER = 1024 * 1024
_MULTIPART_FIRST_FIELD = re.compile(
    rb'content-disposition:\s*form-data;\s*name="csrf_token"\r\n\r\n([^\r\n]{1,200})\r\n',
    re.IGNORECASE,
)

# Scripts run only with this response's nonce (a fresh one each response): an injected
# <script>, inline or from this origin (an uploaded file), has none. Modules a nonced module
# imports inherit its nonce. No inline styles, no eval (htmx's allowEval is off).
CSP = (
    "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def parse_cookies(scope: Scope) -> dict[str, str]:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:
                return {}
            return {key: morsel.value for key, morsel in jar.items()}
    return {}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        _state(scope)["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hsts = settings.secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        _state(scope)["csp_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CSP.format(nonce=nonce))
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Permissions-Policy", "camera=(self), microphone=(self)")
                if self.hsts:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DatabaseUnavailableMiddleware:
    """A request that failed because the database is away (see ``portal.db.unavailable``) is
    answered here with the 503 page (``portal.pages.server_error``) and not raised further:
    Starlette's outer error middleware would re-raise it for the server to log a stack trace on
    every request of an outage. Anything else goes on up as before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            from portal.db import unavailable
            from portal.pages import server_error

            if started or not unavailable(exc):
                raise
            response = await server_error(Request(scope, receive), exc)
            await response(scope, receive, send)


class CsrfMiddleware:
    """Synchroniser token bound to the browser and its login session.

    A random ``jiefen_csrf`` cookie identifies the browser; the token is an HMAC of it and of the
    session cookie under a server key, so it cannot be forged from outside and changes at login.
    Unsafe requests must carry it in the ``X-CSRF-Token`` header (htmx, fetch) or as the
    ``csrf_token`` form field (plain forms; the first field for multipart bodies). Paths under
    ``exempt`` (token-authenticated APIs) are not checked.
    """

    def __init__(self, app: ASGIApp, settings: Settings, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.settings = settings
        self.key = derive_key(settings.secret_key, "jiefen/csrf")
        self.exempt = exempt

    def token_for(self, browser_key: str, session_cookie: str) -> str:
        message = f"{browser_key}|{session_cookie}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies = parse_cookies(scope)
        browser_key = cookies.get(CSRF_COOKIE)
        new_key = None
        if not browser_key or len(browser_key) < 20:
            browser_key = new_key = secrets.token_urlsafe(32)
        session_cookie = cookies.get(self.settings.session_cookie_name, "")
        expected = self.token_for(browser_key, session_cookie)
        state = _state(scope)
        state["csrf_token"] = expected
        state["csrf"] = self
        state["browser_key"] = browser_key

        if new_key is not None:
            send = self._setting_cookie(send, new_key)

        method = scope["method"]
        if method in SAFE_METHODS or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, CSRF_HEADER)
        if supplied is None:
            supplied, receive = await self._token_from_body(scope, receive)
        if new_key is not None or not supplied or not hmac.compare_digest(supplied, expected):
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _setting_cookie(self, send: Send, key: str) -> Send:
        secure = "; Secure" if self.settings.secure_cookies else ""
        cookie = f"{CSRF_COOKIE}={key}; Path=/; HttpOnly; SameSite=Lax{secure}"

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Set-Cookie", cookie)
            await send(message)

        return wrapped

    async def _token_from_body(self, scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
        content_type = (_header(scope, b"content-type") or "").lower()
        is_urlencoded = content_type.startswith("application/x-www-form-urlencoded")
        is_multipart = content_type.startswith("multipart/form-data")
        if not (is_urlencoded or is_multipart):
            return None, receive
        chunks: list[Message] = []
        body = b""
        more = True
        token: str | None = None
        limit = MAX_FORM_BUFFER if is_urlencoded else 64 * 1024
        while more and len(body) <= limit:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if is_multipart:
                found = _MULTIPART_FIRST_FIELD.search(body)
                if found:
                    token = found.group(1).decode("ascii", "replace")
                    break
        if is_urlencoded and not more:
            values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(CSRF_FIELD)
            token = values[0] if values else None

        async def replay() -> Message:
            if chunks:
                return chunks.pop(0)
            return await receive()

        return token, replay

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from portal.pages import csrf_failure  # the view layer renders the page

        response = await csrf_failure(Request(scope, receive))
        await response(scope, receive, send)


class SessionMiddleware:
    """Resolve the login session, the language and display preferences for each request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies = parse_cookies(scope)
        state = _state(scope)
        token = accounts.unsign_token(self.settings, cookies.get(self.settings.session_cookie_name))
        user = None
        if token is not None and not scope["path"].startswith("/static/"):
            async with session_scope(scope["app"].state.db) as db:
                found = await accounts.resolve_session(db, self.settings, token)
            if found is not None:
                user = found[0]
        state["user"] = user
        state["session_token"] = token if user is not None else None
        state["identity"] = accounts.identity_of(user)
        state["locale"] = negotiate_locale(
            user.locale if user else None,
            cookies.get(LANG_COOKIE),
            default=self.settings.default_locale,
        )
        state["large_text"] = user.large_text if user else cookies.get(TEXT_COOKIE) == "large"
        flashed = read_flash(self.settings, cookies.get(FLASH_COOKIE))
        state["flash"] = flashed
        if flashed is not None:
            send = _clearing_cookie(send, FLASH_COOKIE)
        await self.app(scope, receive, send)


def _clearing_cookie(send: Send, name: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            if not any(v.startswith(f"{name}=") for v in headers.getlist("set-cookie")):
                headers.append("Set-Cookie", f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
        await send(message)

    return wrapped
