"""Session pages: a case's sessions (and scheduling), the session page, reschedule, cancel.

What happens during a session goes over Socket.IO (``realtime.meetings``); these pages only
plan sessions and serve the page the session runs in.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.cases import service as cases
from portal.db import utcnow
from portal.errors import DomainError
from portal.evidence import policy as evidence_policy
from portal.i18n import _l
from portal.meetings import service
from portal.meetings.forms import DURATION_CHOICES, ScheduleForm
from portal.meetings.ice import ice_servers
from portal.meetings.models import MeetingStatus, Side
from portal.meetings.policy import CaseMeetings, MeetingAccess
from portal.web import (
    current_user,
    db_session,
    flash,
    identity,
    permits,
    read_form,
    redirect,
    render,
    require,
    tr,
)

CHOICES = {
    "modes": service.MODES,
    "durations": {value: _l("{count} minutes", count=value) for value in DURATION_CHOICES},
    "statuses": service.STATUS_LABELS,
    "outcomes": service.OUTCOMES,
    "sides": service.SIDES,
    "rooms": service.ROOMS,
    "room_full": service.ROOM_FULL,
    "MeetingStatus": MeetingStatus,
}


def _local_input(request: Request, moment: datetime) -> str:
    """A moment as a ``datetime-local`` field's value in the portal's time zone."""
    zone = ZoneInfo(request.app.state.settings.time_zone)
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


async def case_meetings(request: Request) -> Response:
    """A case's sessions; its mediator schedules one here."""
    time_zone = request.app.state.settings.time_zone
    async with db_session(request) as db:
        case = await cases.get_case(db, request.path_params["case_id"])
        require(request, "view", case)
        resource = CaseMeetings(case)
        form = ScheduleForm({"duration": "60", "mode": "video"}, time_zone)
        if request.method == "POST":
            require(request, "schedule", resource)
            form = ScheduleForm(await read_form(request), time_zone)
            if form.validate():
                try:
                    meeting = await service.schedule_meeting(
                        db,
                        case,
                        await current_user(request, db),
                        starts_at=form.cleaned["starts_at"],
                        duration_minutes=form.cleaned["duration"],
                        mode=form.cleaned["mode"],
                        observer_ids=form.cleaned["observers"],
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    back = redirect(request, "meetings.room", meeting_id=meeting.id)
                    return flash(request, back, _l("Session scheduled. Everyone has been told."))
        can_schedule = permits(request, "schedule", resource)
        meetings = await service.meetings_of(db, case)
        open_to_me = {
            m.id for m in meetings if permits(request, "view", await service.access(db, m.id))
        }
        observers = await service.observer_choices(db, case) if can_schedule else []
    return render(
        request,
        "meetings/list.html",
        {
            "case": case,
            "meetings": meetings,
            "open_to_me": open_to_me,
            "can_schedule": can_schedule,
            "schedulable": case.status in service.SCHEDULABLE,
            "observers": {str(u.id): u.display_name for u in observers},
            "form": form,
            **CHOICES,
        },
        status_code=400 if form.errors else 200,
        block="sessions",
    )


async def meeting_room(request: Request) -> Response:
    """The page a session runs in (the live part is ``static/js/meeting.js``)."""
    async with db_session(request) as db:
        resource = await service.access(db, request.path_params["meeting_id"])
        require(request, "view", resource)
        rows = await service.seats(db, resource.meeting)
        materials = await cases.materials(db, resource.case)
    meeting = resource.meeting
    # Evidence items this person may show in the chat (the server checks the room's readers).
    shareable = [
        m for m in materials if permits(request, "view", evidence_policy.Item(m, resource.case))
    ]
    manage = permits(request, "manage", resource)
    me = identity(request).user_id
    mine = next((r.participant for r in rows if r.participant.user_id == me), None)
    form = ScheduleForm(
        {
            "starts_at": _local_input(request, meeting.starts_at),
            "duration": str(meeting.duration_minutes),
            "mode": meeting.mode,
        },
        request.app.state.settings.time_zone,
    )
    return render(
        request,
        "meetings/room.html",
        {
            "meeting": meeting,
            "case": resource.case,
            "seats": rows,
            "manage": manage,
            "my_side": mine.side if mine else _side_guess(resource, request),
            "form": form,
            "shareable": shareable,
            "room_names": {room: tr(request, label) for room, label in service.ROOMS.items()},
            "side_names": {side: tr(request, label) for side, label in service.SIDES.items()},
            "status_names": {
                status: tr(request, label) for status, label in service.STATUS_LABELS.items()
            },
            **CHOICES,
        },
    )


def _side_guess(resource: MeetingAccess, request: Request) -> str:
    """The side of someone allowed in who has no seat yet (a firm's newer representative)."""
    who = identity(request)
    if who.firm_id is not None and who.firm_id == resource.case.respondent_firm_id:
        return Side.RESPONDENT.value
    return Side.CLAIMANT.value


async def _managed(request: Request, db: AsyncSession) -> MeetingAccess:
    resource = await service.access(db, request.path_params["meeting_id"])
    require(request, "manage", resource)
    return resource


async def reschedule(request: Request) -> Response:
    time_zone = request.app.state.settings.time_zone
    async with db_session(request) as db:
        resource = await _managed(request, db)
        back = redirect(request, "meetings.room", meeting_id=resource.meeting.id)
        form = ScheduleForm(await read_form(request), time_zone)
        try:
            if not form.validate():
                field, message = next(iter(form.errors.items()))
                raise DomainError(message, field=field)
            await service.reschedule_meeting(
                db,
                resource.meeting,
                resource.case,
                await current_user(request, db),
                starts_at=form.cleaned["starts_at"],
                duration_minutes=form.cleaned["duration"],
                mode=form.cleaned["mode"],
            )
        except DomainError as exc:
            return flash(request, back, exc.message, "error")
    return flash(request, back, _l("Session moved. Everyone has been told."))


async def cancel(request: Request) -> Response:
    async with db_session(request) as db:
        resource = await _managed(request, db)
        back = redirect(request, "meetings.room", meeting_id=resource.meeting.id)
        reason = (await read_form(request)).get("reason", "")
        try:
            await service.cancel_meeting(
                db,
                resource.meeting,
                resource.case,
                await current_user(request, db),
                reason if isinstance(reason, str) else "",
            )
        except DomainError as exc:
            return flash(request, back, exc.message, "error")
    return flash(request, back, _l("Session cancelled. Everyone has been told."))


async def meeting_ice_servers(request: Request) -> Response:
    """The ICE servers (with this participant's own TURN credentials) for a session's media."""
    async with db_session(request) as db:
        resource = await service.access(db, request.path_params["meeting_id"])
        require(request, "join", resource)
    user_id = identity(request).user_id
    assert user_id is not None  # "join" is never granted to anonymous visitors
    found = ice_servers(request.app.state.settings, user_id, utcnow())
    return JSONResponse(found, headers={"Cache-Control": "no-store"})


routes = [
    Route(
        "/cases/{case_id:int}/meetings",
        case_meetings,
        methods=["GET", "POST"],
        name="meetings.list",
    ),
    Route("/meetings/{meeting_id:int}", meeting_room, name="meetings.room"),
    Route(
        "/meetings/{meeting_id:int}/reschedule",
        reschedule,
        methods=["POST"],
        name="meetings.reschedule",
    ),
    Route("/meetings/{meeting_id:int}/cancel", cancel, methods=["POST"], name="meetings.cancel"),
    Route(
        "/api/v1/meetings/{meeting_id:int}/ice-servers",
        meeting_ice_servers,
        name="meetings.ice_servers",
    ),
]
