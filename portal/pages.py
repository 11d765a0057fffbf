"""Pages that belong to no feature: home, and the error pages (404, 400, 403 CSRF, 500, 503)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.cases.service import today_in_china
from portal.db import unavailable
from portal.errors import DomainError, NotFound
from portal.i18n import _l
from portal.policy import NotPermitted, Role
from portal.web import db_session, identity, redirect_to, render
from portal.workdays.service import coverage_warning, load_calendar

log = logging.getLogger("jiefen.errors")


async def home(request: Request) -> Response:
    context = {}
    if identity(request).role in (Role.COMMITTEE_ADMIN, Role.PLATFORM_ADMIN):
        async with db_session(request) as db:
            calendar = await load_calendar(db)
        context["calendar_warning"] = coverage_warning(calendar, today_in_china())
    return render(request, "home.html", context)


async def not_found(request: Request, exc: Exception | None = None) -> Response:
    return render(request, "errors/error.html", {"status": 404}, status_code=404)


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if request.url.path.startswith("/api/"):
        from portal.api.views import api_error  # the API answers in problem details

        return api_error(request, status)
    if status == 404:
        return await not_found(request)
    return render(request, "errors/error.html", {"status": status}, status_code=status)


async def not_permitted(request: Request, exc: Exception) -> Response:
    if not identity(request).is_authenticated:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = str(request.app.url_path_for("accounts.login"))
        from urllib.parse import quote

        return redirect_to(request, f"{login}?next={quote(target)}")
    return await not_found(request)


async def domain_error(request: Request, exc: Exception) -> Response:
    message = exc.message if isinstance(exc, DomainError) else _l("The request is not valid.")
    return render(
        request, "errors/error.html", {"status": 400, "message": message}, status_code=400
    )


# How long a client should wait before trying again while the database is away.
RETRY_AFTER_SECONDS = 15


async def server_error(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "-")
    if unavailable(exc):
        # The database is away (restart, failover, SQLite busy): say so and when to retry,
        # rather than a crash. One line, no stack: an outage would flood the log otherwise.
        log.warning(
            "database unavailable request_id=%s path=%s error=%s",
            request_id,
            request.url.path,
            type(exc).__name__,
        )
        status, headers = 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    else:
        log.error(
            "unhandled error request_id=%s path=%s", request_id, request.url.path, exc_info=exc
        )
        status, headers = 500, {}
    if request.url.path.startswith("/api/"):
        from portal.api.views import api_error

        return api_error(request, status, headers)
    try:
        response = render(request, "errors/error.html", {"status": status}, status_code=status)
        response.headers.update(headers)
        return response
    except Exception:
        text = (
            "服务暂时不可用，请稍后再试。Service briefly unavailable; please try again shortly."
            if status == 503
            else "系统出错了。Server error."
        )
        return Response(
            f"{text} Request id: {request_id}",
            status_code=status,
            headers=headers,
            media_type="text/plain; charset=utf-8",
        )


async def csrf_failure(request: Request) -> Response:
    return render(
        request,
        "errors/error.html",
        {
            "status": 403,
            "message": _l(
                "This form has expired or came from another site. Reload the page and try again."
            ),
        },
        status_code=403,
    )


EXCEPTION_HANDLERS = {
    NotPermitted: not_permitted,
    NotFound: not_found,
    DomainError: domain_error,
    HTTPException: http_error,
    Exception: server_error,
}

routes = [Route("/", home, name="home")]
