"""The notification centre: in-app messages with unread counts, and delivery receipts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.cases.policy import NOTIFICATIONS
from portal.notify import service
from portal.web import db_session, identity, locale_of, redirect, render, require


async def centre(request: Request) -> Response:
    require(request, "view", NOTIFICATIONS)
    user_id = identity(request).user_id
    assert user_id is not None
    catalogues = request.app.state.catalogues
    locale = locale_of(request)
    async with db_session(request) as db:
        rows = await service.list_for_user(db, user_id)
        receipts = await service.delivery_log(db, user_id)
        unread = await service.unread_count(db, user_id)
    items = [(n, *service.render(n, catalogues, locale)) for n in rows]
    sent = [(n, service.render(n, catalogues, locale)[0]) for n in receipts]
    return render(
        request, "notify/centre.html", {"items": items, "receipts": sent, "unread": unread}
    )


async def badge(request: Request) -> Response:
    """The unread count, polled by the header (htmx)."""
    require(request, "view", NOTIFICATIONS)
    user_id = identity(request).user_id
    assert user_id is not None
    async with db_session(request) as db:
        unread = await service.unread_count(db, user_id)
    return render(request, "notify/centre.html", {"unread": unread}, block="badge")


async def read_one(request: Request) -> Response:
    require(request, "view", NOTIFICATIONS)
    user_id = identity(request).user_id
    assert user_id is not None
    async with db_session(request) as db:
        notification = await service.mark_read(db, user_id, request.path_params["notification_id"])
    if notification.link:
        from portal.web import redirect_to

        return redirect_to(request, notification.link)
    return redirect(request, "notify.centre")


async def read_all(request: Request) -> Response:
    require(request, "view", NOTIFICATIONS)
    user_id = identity(request).user_id
    assert user_id is not None
    async with db_session(request) as db:
        await service.mark_all_read(db, user_id)
    return redirect(request, "notify.centre")


routes = [
    Route("/notifications", centre, name="notify.centre"),
    Route("/notifications/badge", badge, name="notify.badge"),
    Route(
        "/notifications/{notification_id:int}/read",
        read_one,
        methods=["POST"],
        name="notify.read",
    ),
    Route("/notifications/read-all", read_all, methods=["POST"], name="notify.read_all"),
]
