"""Minutes pages: the minutes panel (on the session page, loaded with htmx, and on the minutes
page), the minutes page with every version and the changes between them, the exact text of a
version (the file a receipt is checked against), autosave, putting the minutes to the parties,
confirming and declining.

htmx requests get a block of ``meetings/minutes.html``: ``minutes_status`` after a save,
``minutes_panel`` after any other change, ``minutes_responses`` for the mediator's view of the
answers (``?part=responses``). Without htmx, a change redirects to the minutes page, and a
refusal shows that page again with the message (and the text that was not saved).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.accounts.models import User
from portal.errors import DomainError, NotFound
from portal.evidence.policy import Item
from portal.i18n import Msg, _l
from portal.meetings import minutes as service
from portal.meetings import recording
from portal.meetings import service as meetings
from portal.meetings.minutes_models import MinutesState
from portal.meetings.policy import MeetingAccess
from portal.web import (
    current_user,
    db_session,
    flash,
    is_htmx,
    permits,
    read_form,
    redirect,
    render,
    require,
)

TEMPLATE = "meetings/minutes.html"
LABELS: dict[str, Any] = {
    "recording_statuses": recording.STATUS_LABELS,
    "recording_reasons": recording.REASONS,
    "recording_kinds": recording.FILE_KINDS,
    "rooms": meetings.ROOMS,
    "states": service.STATE_LABELS,
    "answer_labels": service.ANSWER_LABELS,
    "sides": meetings.SIDES,
    "statuses": meetings.STATUS_LABELS,
    "MinutesState": MinutesState,
    "clock": service.clock,
    "max_minutes": service.MAX_MINUTES,
    "max_reason": service.MAX_REASON,
}


def _number(raw: Any) -> int | None:
    """A whole number from a form or query value, or None."""
    if isinstance(raw, str) and raw.strip().isdecimal() and len(raw.strip()) < 10:
        return int(raw.strip())
    return None


def _text(form: Any, name: str) -> str:
    raw = form.get(name, "")
    return raw if isinstance(raw, str) else ""


async def _load(request: Request, db: AsyncSession, permission: str) -> MeetingAccess:
    resource = await meetings.access(db, request.path_params["meeting_id"])
    require(request, "view", resource)
    require(request, permission, resource)
    return resource


async def _read(request: Request, db: AsyncSession) -> service.Minutes:
    """The minutes as the requester may see them, loaded afresh."""
    resource = await _load(request, db, "view")
    reader: User = await current_user(request, db)
    writer = permits(request, "write_minutes", resource)
    return await service.read_minutes(db, resource, reader, writer=writer)


def _context(request: Request, minutes: service.Minutes, **extra: Any) -> dict[str, Any]:
    """The page's context: the minutes, the version shown (``?version=``, else the newest
    this reader may see) and its changes from another (``?compare=``, else the one before)."""
    shown = minutes.latest
    wanted = request.query_params.get("version")
    if wanted is not None:
        number = _number(wanted)
        shown = minutes.version(number) if number is not None else None
        if shown is None:
            raise NotFound
    compare = minutes.previous(shown) if shown is not None else None
    other = request.query_params.get("compare")
    if other is not None and shown is not None:
        number = _number(other)
        compare = minutes.version(number) if number is not None else None
        if compare is None or compare.id == shown.id:
            raise NotFound
    diff = (
        service.diff_texts(compare.text, shown.text)
        if shown is not None and compare is not None
        else []
    )
    return {
        "minutes": minutes,
        "meeting": minutes.meeting,
        "case": minutes.case,
        "revision": minutes.revision,
        "saved": minutes.latest if minutes.writer else None,
        "shown": shown,
        "compare": compare,
        "diff": diff,
        **LABELS,
        **extra,
    }


async def _recordings(
    request: Request, db: AsyncSession, minutes: service.Minutes
) -> list[recording.Listed]:
    """The session's recordings with the files this reader may see; the mediator and the
    committee also see recordings that were refused, cancelled or lost."""
    staff = permits(request, "write_minutes", await _load(request, db, "view"))
    shown = []
    for listed in await recording.listing(db, minutes.meeting.id):
        files = [
            f for f in listed.files if permits(request, "view", Item(f.material, minutes.case))
        ]
        if files or staff:
            shown.append(recording.Listed(listed.recording, files, listed.consents))
    return shown


async def minutes_page(request: Request) -> Response:
    """The minutes page; for htmx, the panel (or, with ``?part=responses``, the answers)."""
    block = "minutes_responses" if request.query_params.get("part") == "responses" else None
    async with db_session(request) as db:
        minutes = await _read(request, db)
        recordings = await _recordings(request, db, minutes) if block is None else []
    context = _context(request, minutes, recordings=recordings)
    return render(request, TEMPLATE, context, block=block or "minutes_panel")


async def _refused(request: Request, db: AsyncSession, message: Msg, **extra: Any) -> Response:
    """The panel (htmx) or the page again with the refusal; the service rolled back, so
    everything is read again."""
    minutes = await _read(request, db)
    recordings = [] if is_htmx(request) else await _recordings(request, db, minutes)
    context = _context(request, minutes, error=message, recordings=recordings, **extra)
    return render(request, TEMPLATE, context, status_code=400, block="minutes_panel")


def _kept(exc: DomainError, text: str) -> dict[str, str]:
    """Where the text that was not saved goes on the page again: back in the editor, unless
    the minutes were changed elsewhere meanwhile (then the editor shows those, and the text
    is shown beside it to copy, so that a save from here cannot undo the other change)."""
    if isinstance(exc, service.StaleMinutes):
        return {"unsaved": text}
    return {"draft": text}


def _done(request: Request, minutes: service.Minutes, message: Msg) -> Response:
    if is_htmx(request):
        return render(
            request, TEMPLATE, _context(request, minutes, notice=message), block="minutes_panel"
        )
    back = redirect(request, "meetings.minutes", meeting_id=minutes.meeting.id)
    return flash(request, back, message)


async def save(request: Request) -> Response:
    """Autosave (htmx: the "Saved at …" status) or the save button."""
    async with db_session(request) as db:
        resource = await _load(request, db, "write_minutes")
        form = await read_form(request)
        text = _text(form, "text")
        base = _number(form.get("base"))
        actor = await current_user(request, db)
        try:
            saved = await service.save_minutes(
                db, resource, actor, text, base if base is not None else -1
            )
        except DomainError as exc:
            if is_htmx(request):
                context: dict[str, Any] = {
                    "revision": base,
                    "saved": None,
                    "status_error": exc.message,
                }
                return render(request, TEMPLATE, context, status_code=400, block="minutes_status")
            return await _refused(request, db, exc.message, **_kept(exc, text))
    version = saved.version
    if is_htmx(request):
        context = {  # (the block needs only these)
            "revision": version.revision,
            "saved": version,
            "superseded": saved.superseded,
            **LABELS,
        }
        return render(request, TEMPLATE, context, block="minutes_status")
    back = redirect(request, "meetings.minutes", meeting_id=resource.meeting.id)
    return flash(request, back, _l("Minutes saved: version {version}.", version=version.number))


async def present(request: Request) -> Response:
    """Put the minutes, as in the editor, to the parties."""
    async with db_session(request) as db:
        resource = await _load(request, db, "write_minutes")
        form = await read_form(request)
        text = _text(form, "text")
        base = _number(form.get("base"))
        actor = await current_user(request, db)
        try:
            version = await service.present_minutes(
                db, resource, actor, text, base if base is not None else -1
            )
        except DomainError as exc:
            return await _refused(request, db, exc.message, **_kept(exc, text))
        minutes = await _read(request, db)
    return _done(
        request,
        minutes,
        _l(
            "Version {version} of the minutes was put to the parties. They have been told.",
            version=version.number,
        ),
    )


async def _answer(request: Request, confirm: bool) -> Response:
    async with db_session(request) as db:
        resource = await _load(request, db, "confirm_minutes")
        form = await read_form(request)
        number = _number(form.get("version"))
        sha256 = _text(form, "sha256")
        reason = _text(form, "reason")
        actor = await current_user(request, db)
        try:
            if number is None:
                raise DomainError(_l("The request is not valid."))
            if confirm:
                done = await service.confirm_minutes(db, resource, actor, number, sha256)
                message = (
                    _l("Thank you. Every party has confirmed the minutes: they are now final.")
                    if done.complete
                    else _l("Thank you. Your confirmation was recorded.")
                )
            else:
                await service.decline_minutes(db, resource, actor, number, sha256, reason)
                message = _l("Your answer was sent to the mediator.")
        except DomainError as exc:
            return await _refused(request, db, exc.message, reason=reason)
        minutes = await _read(request, db)
    return _done(request, minutes, message)


async def confirm(request: Request) -> Response:
    return await _answer(request, confirm=True)


async def decline(request: Request) -> Response:
    return await _answer(request, confirm=False)


async def version_text(request: Request) -> Response:
    """The exact text of a version, UTF-8: the bytes its SHA-256 (and, once confirmed, the
    evidence log's receipt) is checked against."""
    async with db_session(request) as db:
        minutes = await _read(request, db)
    version = minutes.version(request.path_params["version"])
    if version is None:
        raise NotFound
    name = (
        f"minutes-{minutes.case.number or minutes.case.id}-{minutes.meeting.id}-v{version.number}"
    )
    return Response(
        version.text.encode("utf-8"),
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.txt"',
            "Cache-Control": "private, no-store",
        },
    )


routes = [
    Route("/meetings/{meeting_id:int}/minutes", minutes_page, name="meetings.minutes"),
    Route(
        "/meetings/{meeting_id:int}/minutes/save",
        save,
        methods=["POST"],
        name="meetings.minutes_save",
    ),
    Route(
        "/meetings/{meeting_id:int}/minutes/present",
        present,
        methods=["POST"],
        name="meetings.minutes_present",
    ),
    Route(
        "/meetings/{meeting_id:int}/minutes/confirm",
        confirm,
        methods=["POST"],
        name="meetings.minutes_confirm",
    ),
    Route(
        "/meetings/{meeting_id:int}/minutes/decline",
        decline,
        methods=["POST"],
        name="meetings.minutes_decline",
    ),
    Route(
        "/meetings/{meeting_id:int}/minutes/{version:int}.txt",
        version_text,
        name="meetings.minutes_text",
    ),
]
