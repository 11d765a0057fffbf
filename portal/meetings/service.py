"""Live mediation sessions: scheduling, the waiting room, rooms, chat and signaling.

Every change is one function here, in its own transaction. Changes that others must see live
queue their events with ``portal.live.on_commit``: nothing is sent unless the change commits.
The server decides who receives what, and it does so here: every event goes to a socket room
named after the session and one of its rooms (:func:`room_channel`), or to one participant's
sockets (:func:`seat_channel`). A socket is only ever put in the rooms its participant may be
in (:data:`ENTERABLE`), so nothing said in a caucus can reach the other side, whatever the
order in which events arrive.

Changes of who is where first lock the session's row (an UPDATE of ``meetings.version``), so
they are applied one at a time and each participant's state carries the version it reflects.
Chat sequence numbers are allocated by the same row (``last_seq``), locked until the message
commits: a number is never given twice, and every number up to ``last_seq`` as read by anyone
belongs to a committed message (or to none, if its transaction failed).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.audit.service import record
from portal.cases import service as cases
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseEvent, CaseMaterial
from portal.cases.service import TZ
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence.policy import Item
from portal.i18n import Msg, _l
from portal.live import CloseRoom, Emit, Enter, Leave, Op, on_commit
from portal.meetings.models import (
    Meeting,
    MeetingConnection,
    MeetingMessage,
    MeetingStatus,
    Mode,
    Outcome,
    Participant,
    RealtimeProcess,
    Room,
    SeatState,
    Side,
)
from portal.meetings.policy import MeetingAccess
from portal.notify.service import notify
from portal.policy import Identity, Role
from realtime.events import (
    ChatMessage,
    MediaRequest,
    MeetingState,
    PeerJoined,
    PeerLeft,
    Presence,
    SeatView,
    Signal,
    Typing,
)

MODES: dict[str, Msg] = {
    Mode.VIDEO: _l("Video"),
    Mode.VOICE: _l("Voice only"),
    Mode.TEXT: _l("Text chat only"),
}
STATUS_LABELS: dict[str, Msg] = {
    MeetingStatus.SCHEDULED: _l("Scheduled"),
    MeetingStatus.OPEN: _l("In progress"),
    MeetingStatus.ENDED: _l("Ended"),
    MeetingStatus.CANCELLED: _l("Cancelled"),
}
OUTCOMES: dict[str, Msg] = {
    Outcome.ADJOURNED: _l("Adjourned: to be continued"),
    Outcome.SETTLED: _l("Settled: on to the agreement"),
    Outcome.FAILED: _l("No settlement reached"),
}
SIDES: dict[str, Msg] = {
    Side.CLAIMANT: _l("Claimant"),
    Side.RESPONDENT: _l("Firm"),
    Side.MEDIATOR: _l("Mediator"),
    Side.OBSERVER: _l("Observer"),
}
ROOMS: dict[str, Msg] = {
    Room.JOINT: _l("Joint room"),
    Room.CAUCUS_CLAIMANT: _l("Claimant's private room"),
    Room.CAUCUS_RESPONDENT: _l("Firm's private room"),
    Room.NOTES: _l("Mediator's notes"),
}
DURATIONS = (30, 45, 60, 90, 120, 180)
MAX_MESSAGE = 2000
MAX_SIGNAL_BYTES = 16 * 1024
SYNC_LIMIT = 500
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SCHEDULABLE = frozenset({Status.ASSIGNED, Status.IN_MEDIATION})

# The rooms a participant of each side may be in, and the rooms whose messages they may read.
ENTERABLE: dict[str, frozenset[Room]] = {
    Side.CLAIMANT: frozenset({Room.JOINT, Room.CAUCUS_CLAIMANT}),
    Side.RESPONDENT: frozenset({Room.JOINT, Room.CAUCUS_RESPONDENT}),
    Side.OBSERVER: frozenset({Room.JOINT}),
    Side.MEDIATOR: frozenset({Room.JOINT, Room.CAUCUS_CLAIMANT, Room.CAUCUS_RESPONDENT}),
}
READABLE: dict[str, frozenset[Room]] = {
    **ENTERABLE,
    Side.MEDIATOR: frozenset(Room),
}


class Refused(DomainError):
    """A refusal with a code that socket clients can act on (``invalid_room``, ``locked``…)."""

    def __init__(self, code: str, message: Msg) -> None:
        super().__init__(message)
        self.code = code


def room_channel(meeting_id: int, room: str) -> str:
    """The socket room of one of a session's rooms."""
    return f"meeting:{meeting_id}:{room}"


def seat_channel(meeting_id: int, participant_id: int) -> str:
    """The socket room of all of one participant's sockets."""
    return f"meeting:{meeting_id}:seat:{participant_id}"


# -- reading --------------------------------------------------------------------------------


async def get_meeting(db: AsyncSession, meeting_id: int) -> Meeting:
    meeting = await db.get(Meeting, meeting_id)
    if meeting is None:
        raise NotFound
    return meeting


async def access(db: AsyncSession, meeting_id: int) -> MeetingAccess:
    """The session with what its permissions depend on (NotFound if there is none)."""
    meeting = await get_meeting(db, meeting_id)
    case = await db.get(Case, meeting.case_id)
    if case is None:
        raise NotFound
    observers = await db.scalars(
        select(Participant.user_id).where(
            Participant.meeting_id == meeting.id, Participant.side == Side.OBSERVER.value
        )
    )
    return MeetingAccess(meeting, case, frozenset(observers))


async def meetings_of(db: AsyncSession, case: Case) -> list[Meeting]:
    return list(
        await db.scalars(
            select(Meeting).where(Meeting.case_id == case.id).order_by(Meeting.starts_at.desc())
        )
    )


@dataclass(frozen=True)
class SeatRow:
    participant: Participant
    name: str


async def seats(db: AsyncSession, meeting: Meeting) -> list[SeatRow]:
    rows = await db.execute(
        select(Participant, User.display_name)
        .join(User, User.id == Participant.user_id)
        .where(Participant.meeting_id == meeting.id)
        .order_by(Participant.id)
        .execution_options(populate_existing=True)
    )
    return [SeatRow(p, name) for p, name in rows]


async def observer_choices(db: AsyncSession, case: Case) -> list[User]:
    """Who may be invited to observe: the committee's other mediators and its administrators."""
    return list(
        await db.scalars(
            select(User)
            .where(
                User.committee_id == case.committee_id,
                User.role.in_([Role.MEDIATOR.value, Role.COMMITTEE_ADMIN.value]),
                User.is_active.is_(True),
                User.id != (case.mediator_id or 0),
            )
            .order_by(User.display_name, User.id)
        )
    )


def local_time(moment: datetime) -> str:
    return moment.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


# -- scheduling -----------------------------------------------------------------------------


def _check_plan(starts_at: datetime, duration_minutes: int, mode: str) -> None:
    if mode not in set(Mode):
        raise DomainError(_l("Choose one of the options."), field="mode")
    if duration_minutes not in DURATIONS:
        raise DomainError(_l("Choose one of the options."), field="duration")
    now = utcnow()
    if starts_at < now - timedelta(minutes=5):
        raise DomainError(_l("Choose a time that has not passed."), field="starts_at")
    if starts_at > now + timedelta(days=366):
        raise DomainError(_l("Choose a time within the next year."), field="starts_at")


async def _firm_reps(db: AsyncSession, firm_id: int | None) -> list[int]:
    if firm_id is None:
        return []
    return list(
        await db.scalars(
            select(User.id)
            .where(
                User.firm_id == firm_id,
                User.role == Role.FIRM_REP.value,
                User.is_active.is_(True),
            )
            .order_by(User.id)
        )
    )


def _timeline(
    db: AsyncSession, case_id: int, actor_id: int, meeting: Meeting, action: str, body: str = ""
) -> None:
    db.add(
        CaseEvent(
            created_at=utcnow(),
            case_id=case_id,
            actor_id=actor_id,
            kind="meeting",
            body=body,
            visibility="all",
            data={
                "meeting_id": meeting.id,
                "action": action,
                "starts_at": meeting.starts_at.isoformat(),
                "mode": meeting.mode,
                "outcome": meeting.outcome,
            },
        )
    )


def meeting_path(meeting_id: int) -> str:
    """The session's page (where one joins it), as a local path."""
    return f"/meetings/{meeting_id}"


# Emails about a session carry its calendar entry, made when sent (portal.meetings.calendar).
CALENDAR_KIND = "meeting"


def calendar_reference(meeting_id: int) -> str:
    return f"{CALENDAR_KIND}:{meeting_id}"


async def invited_ids(db: AsyncSession, meeting_id: int) -> list[int]:
    """Everyone invited to the session and not sent away, mediator included."""
    return list(
        await db.scalars(
            select(Participant.user_id)
            .where(
                Participant.meeting_id == meeting_id,
                Participant.state != SeatState.REMOVED.value,
            )
            .order_by(Participant.id)
        )
    )


async def _tell(
    db: AsyncSession,
    meeting: Meeting,
    case: Case,
    title: Msg,
    body: Msg,
    skip: int,
    *,
    attachment: str | None = None,
) -> None:
    for user_id in await invited_ids(db, meeting.id):
        if user_id != skip:
            await notify(
                db, user_id, title, body, link=meeting_path(meeting.id), attachment=attachment
            )


def _plan_params(case: Case, meeting: Meeting) -> dict[str, Any]:
    return {
        "number": case.number or "",
        "time": local_time(meeting.starts_at),
        "minutes": meeting.duration_minutes,
        "mode": {"msgid": MODES[meeting.mode].msgid},
    }


async def schedule_meeting(
    db: AsyncSession,
    case: Case,
    actor: User,
    *,
    starts_at: datetime,
    duration_minutes: int,
    mode: str,
    observer_ids: Sequence[int] = (),
) -> Meeting:
    """The case's mediator schedules a session; the parties (the filer, the firm's
    representatives) and any observers are invited and told."""
    if case.mediator_id != actor.id:
        raise NotFound
    if case.status not in SCHEDULABLE:
        raise DomainError(
            _l("Sessions can be scheduled while the case is with its mediator, before it ends.")
        )
    _check_plan(starts_at, duration_minutes, mode)
    allowed = {u.id for u in await observer_choices(db, case)}
    if any(o not in allowed for o in observer_ids):
        raise DomainError(_l("Choose one of the options."), field="observers")
    now = utcnow()
    meeting = Meeting(
        case_id=case.id,
        mediator_id=actor.id,
        starts_at=starts_at,
        duration_minutes=duration_minutes,
        mode=mode,
        status=MeetingStatus.SCHEDULED.value,
        locked=False,
        last_seq=0,
        version=0,
        cancel_reason="",
        created_at=now,
        updated_at=now,
        planned_at=now,
        calendar_sequence=0,
    )
    db.add(meeting)
    await db.flush()
    invitees: dict[int, Side] = {actor.id: Side.MEDIATOR}
    invitees.setdefault(case.filer_id, Side.CLAIMANT)
    for rep in await _firm_reps(db, case.respondent_firm_id):
        invitees.setdefault(rep, Side.RESPONDENT)
    for observer in observer_ids:
        invitees.setdefault(observer, Side.OBSERVER)
    for user_id, side in invitees.items():
        db.add(
            Participant(
                meeting_id=meeting.id,
                user_id=user_id,
                side=side.value,
                state=SeatState.INVITED.value,
                invited_at=now,
                updated_at=now,
            )
        )
    await db.flush()
    _timeline(db, case.id, actor.id, meeting, "scheduled")
    record(db, actor.id, "meeting.schedule", "meeting", meeting.id, case=case.id, mode=mode)
    params = _plan_params(case, meeting)
    await _tell(
        db,
        meeting,
        case,
        _l("Mediation session scheduled"),
        _l(
            "Case {number}: a mediation session on {time} ({minutes} minutes, {mode}). "
            "Open the link at that time to join.",
            **params,
        ),
        skip=actor.id,
        attachment=calendar_reference(meeting.id),
    )
    await db.commit()
    return meeting


def _require_scheduled(meeting: Meeting) -> None:
    if meeting.status != MeetingStatus.SCHEDULED:
        raise DomainError(_l("Only a session that has not started can be changed or cancelled."))


async def reschedule_meeting(
    db: AsyncSession,
    meeting: Meeting,
    case: Case,
    actor: User,
    *,
    starts_at: datetime,
    duration_minutes: int,
    mode: str,
) -> Meeting:
    if meeting.mediator_id != actor.id:
        raise NotFound
    _check_plan(starts_at, duration_minutes, mode)
    meeting = await _lock(db, meeting.id)  # not opened meanwhile by a join
    _require_scheduled(meeting)
    before = meeting.starts_at
    meeting.starts_at, meeting.duration_minutes, meeting.mode = starts_at, duration_minutes, mode
    meeting.updated_at = meeting.planned_at = utcnow()
    # Calendars replace the entry they have with this one; the reminders are due again.
    meeting.calendar_sequence += 1
    meeting.reminded_day_at = meeting.reminded_soon_at = None
    _timeline(db, case.id, actor.id, meeting, "rescheduled")
    record(db, actor.id, "meeting.reschedule", "meeting", meeting.id, before=before.isoformat())
    await _tell(
        db,
        meeting,
        case,
        _l("Mediation session moved"),
        _l(
            "Case {number}: the mediation session is now on {time} ({minutes} minutes, {mode}).",
            **_plan_params(case, meeting),
        ),
        skip=actor.id,
        attachment=calendar_reference(meeting.id),
    )
    await db.commit()
    return meeting


async def cancel_meeting(
    db: AsyncSession, meeting: Meeting, case: Case, actor: User, reason: str
) -> Meeting:
    if meeting.mediator_id != actor.id:
        raise NotFound
    reason = reason.strip()
    if not reason:
        raise DomainError(_l("Give a reason."), field="reason")
    meeting = await _lock(db, meeting.id)
    _require_scheduled(meeting)
    meeting.status = MeetingStatus.CANCELLED.value
    meeting.cancel_reason = reason[:2000]
    meeting.ended_at = utcnow()
    _timeline(db, case.id, actor.id, meeting, "cancelled", body=meeting.cancel_reason)
    record(db, actor.id, "meeting.cancel", "meeting", meeting.id)
    await _tell(
        db,
        meeting,
        case,
        _l("Mediation session cancelled"),
        _l(
            "Case {number}: the mediation session on {time} is cancelled. Reason: {reason}",
            number=case.number or "",
            time=local_time(meeting.starts_at),
            reason=meeting.cancel_reason,
        ),
        skip=actor.id,
        attachment=calendar_reference(meeting.id),
    )
    # People already waiting are told, and let go.
    await _publish_states(db, meeting)
    on_commit(db, *_close_ops(meeting, await _seat_ids(db, meeting)))
    await db.execute(delete(MeetingConnection).where(MeetingConnection.meeting_id == meeting.id))
    await db.commit()
    return meeting


# -- who is where ---------------------------------------------------------------------------


async def _lock(db: AsyncSession, meeting_id: int) -> Meeting:
    """Lock the session's row for this transaction and count one more change."""
    version = await db.scalar(
        update(Meeting)
        .where(Meeting.id == meeting_id)
        .values(version=Meeting.version + 1, updated_at=utcnow())
        .returning(Meeting.version)
    )
    if version is None:
        raise NotFound
    meeting = await db.scalar(
        select(Meeting).where(Meeting.id == meeting_id).execution_options(populate_existing=True)
    )
    assert meeting is not None
    return meeting


async def _seat(db: AsyncSession, meeting_id: int, user_id: int) -> Participant | None:
    seat: Participant | None = await db.scalar(
        select(Participant)
        .where(Participant.meeting_id == meeting_id, Participant.user_id == user_id)
        .execution_options(populate_existing=True)
    )
    return seat


async def _seat_ids(db: AsyncSession, meeting: Meeting) -> list[int]:
    return list(
        await db.scalars(select(Participant.id).where(Participant.meeting_id == meeting.id))
    )


async def _sids(db: AsyncSession, participant_id: int) -> list[str]:
    return list(
        await db.scalars(
            select(MeetingConnection.sid)
            .where(MeetingConnection.participant_id == participant_id)
            .order_by(MeetingConnection.sid)
        )
    )


def device_kind(user_agent: str) -> str:
    """ "mobile", "tablet" or "desktop", from a browser's User-Agent header."""
    if "iPad" in user_agent or ("Android" in user_agent and "Mobile" not in user_agent):
        return "tablet"
    if any(word in user_agent for word in ("Mobile", "iPhone", "Android")):
        return "mobile"
    return "desktop"


async def _devices(db: AsyncSession, meeting: Meeting) -> dict[int, str]:
    """The kind of device of each connected participant's latest connection."""
    rows = await db.execute(
        select(MeetingConnection.participant_id, MeetingConnection.device)
        .where(MeetingConnection.meeting_id == meeting.id)
        .order_by(MeetingConnection.connected_at)
    )
    return {participant_id: device_kind(device) for participant_id, device in rows}


async def _connected(db: AsyncSession, meeting: Meeting) -> set[int]:
    return set(
        await db.scalars(
            select(MeetingConnection.participant_id)
            .where(MeetingConnection.meeting_id == meeting.id)
            .distinct()
        )
    )


def _mediator_whereabouts(mediator: Participant | None, seat: Participant, online: bool) -> str:
    if mediator is None or not online or mediator.state != SeatState.ADMITTED:
        return "away"
    if seat.state != SeatState.ADMITTED:
        return "present"
    if mediator.room == seat.room:
        return "here"
    return "joint" if mediator.room == Room.JOINT else "caucus"


MESH_LIMIT = 6  # people in one room who send each other voice and video (a full mesh)
ROOM_FULL = _l(
    "Voice and video are for up to {count} people in a room, and this room is full. "
    "You can still take part by chat.",
    count=MESH_LIMIT,
)


def media_members(seats: Sequence[Participant], online: set[int]) -> set[int]:
    """The participants (ids) who have voice and video: in each room, the mediator and then
    the first to come in, up to MESH_LIMIT of those connected. The others take part by chat."""
    members: set[int] = set()
    by_room: dict[str, list[Participant]] = {}
    for seat in seats:
        if seat.state == SeatState.ADMITTED and seat.room is not None and seat.id in online:
            by_room.setdefault(seat.room, []).append(seat)
    for present in by_room.values():
        present.sort(key=lambda p: (p.side != Side.MEDIATOR, p.updated_at, p.id))
        members.update(p.id for p in present[:MESH_LIMIT])
    return members


async def states(db: AsyncSession, meeting: Meeting) -> dict[int, MeetingState]:
    """Each participant's view of the session, by participant id.

    The mediator sees everyone, waiting room included; anyone else sees only who is in their
    own room, and where the mediator is in words that do not name the other side's room.
    """
    rows = await seats(db, meeting)
    devices = await _devices(db, meeting)
    online = set(devices)
    with_media = (
        media_members([r.participant for r in rows], online) if meeting.mode != Mode.TEXT else set()
    )
    views: dict[int, SeatView] = {}
    for row in rows:
        p = row.participant
        views[p.id] = SeatView(
            user_id=p.user_id,
            name=row.name,
            side=p.side,
            state=p.state,
            room=p.room if p.state == SeatState.ADMITTED else None,
            connected=p.id in online,
            device=devices.get(p.id, ""),
            media=p.id in with_media,
        )
    mediator = next((r.participant for r in rows if r.participant.side == Side.MEDIATOR), None)
    from portal.meetings import recording  # it builds on this module

    recordings = await recording.views(db, meeting, rows, online)
    found: dict[int, MeetingState] = {}
    for row in rows:
        p = row.participant
        if p.side == Side.MEDIATOR:
            visible = tuple(views[r.participant.id] for r in rows if r.participant.id != p.id)
            whereabouts = "here"
        else:
            visible = tuple(
                views[q.id]
                for q in (r.participant for r in rows)
                if p.state == SeatState.ADMITTED
                and q.id != p.id
                and q.state == SeatState.ADMITTED
                and q.room == p.room
            )
            whereabouts = _mediator_whereabouts(
                mediator, p, mediator is not None and mediator.id in online
            )
        found[p.id] = MeetingState(
            meeting_id=meeting.id,
            version=meeting.version,
            status=meeting.status,
            mode=meeting.mode,
            locked=meeting.locked,
            outcome=meeting.outcome,
            you=views[p.id],
            seats=visible,
            mediator=whereabouts,
            recordings=recordings.get(p.id, ()),
        )
    return found


async def _publish_states(db: AsyncSession, meeting: Meeting) -> dict[int, MeetingState]:
    """Queue each connected participant's fresh state; return everyone's."""
    await db.flush()
    found = await states(db, meeting)
    online = await _connected(db, meeting)
    on_commit(
        db,
        *(Emit(seat_channel(meeting.id, p), state) for p, state in found.items() if p in online),
    )
    return found


def _room_rooms(seat: Participant) -> list[str]:
    """The socket rooms of an admitted participant's current room (and the mediator's notes)."""
    if seat.state != SeatState.ADMITTED or seat.room is None:
        return []
    rooms = [room_channel(seat.meeting_id, seat.room)]
    if seat.side == Side.MEDIATOR:
        rooms.append(room_channel(seat.meeting_id, Room.NOTES))
    return rooms


def _peer_joined(seat: Participant, name: str) -> PeerJoined:
    assert seat.room is not None
    return PeerJoined(
        meeting_id=seat.meeting_id, room=seat.room, user_id=seat.user_id, name=name, side=seat.side
    )


def _close_ops(meeting: Meeting, participant_ids: Sequence[int]) -> list[Op]:
    ops: list[Op] = [CloseRoom(room_channel(meeting.id, room)) for room in Room]
    ops += [CloseRoom(seat_channel(meeting.id, pid)) for pid in participant_ids]
    return ops


async def _name(db: AsyncSession, user_id: int) -> str:
    return (await db.scalar(select(User.display_name).where(User.id == user_id))) or ""


def side_of(case: Case, user: User) -> Side | None:
    """The side a user takes in a session of ``case`` without an invitation of their own."""
    if user.id == case.mediator_id:
        return Side.MEDIATOR
    if user.id == case.filer_id:
        return Side.CLAIMANT
    if (
        user.role == Role.FIRM_REP
        and case.respondent_firm_id is not None
        and user.firm_id == case.respondent_firm_id
    ):
        return Side.RESPONDENT
    return None


@dataclass(frozen=True)
class Joined:
    participant: Participant
    state: MeetingState


async def join_meeting(
    db: AsyncSession,
    resource: MeetingAccess,
    user: User,
    sid: str,
    device: str = "",
    process: str = "",
) -> Joined:
    """A socket joins the session (the caller has checked the "join" permission).

    The mediator is admitted at once, and opens the session if it was only scheduled. Anyone
    else knocks: they wait until the mediator admits them, however early they come. Someone
    already admitted returns to the room they were in, on any device and after any reconnect.
    """
    meeting = await _lock(db, resource.meeting.id)
    if meeting.status in (MeetingStatus.ENDED, MeetingStatus.CANCELLED):
        raise Refused("ended", _l("This session is over."))
    seat = await _seat(db, meeting.id, user.id)
    now = utcnow()
    if seat is None:
        side = side_of(resource.case, user)
        if side is None or side == Side.MEDIATOR:
            raise NotFound
        seat = Participant(
            meeting_id=meeting.id,
            user_id=user.id,
            side=side.value,
            state=SeatState.INVITED.value,
            invited_at=now,
            updated_at=now,
        )
        db.add(seat)
        await db.flush()
    if seat.state == SeatState.REMOVED:
        raise Refused("removed", _l("The mediator has asked you to leave this session."))
    if seat.side == Side.MEDIATOR:
        if meeting.status == MeetingStatus.SCHEDULED:
            meeting.status = MeetingStatus.OPEN.value
            meeting.opened_at = now
            record(db, user.id, "meeting.open", "meeting", meeting.id)
            await cases.start_mediation_in_session(db, resource.case, user)
        if seat.state != SeatState.ADMITTED:
            seat.state = SeatState.ADMITTED.value
            seat.room = seat.room or Room.JOINT.value
            seat.admitted_at = now
    elif seat.state in (SeatState.INVITED, SeatState.TURNED_AWAY):
        if meeting.locked:
            raise Refused(
                "locked", _l("The mediator has locked this session: nobody else can come in.")
            )
        seat.state = SeatState.WAITING.value
        record(db, user.id, "meeting.knock", "meeting", meeting.id)
    seat.updated_at = now
    if await db.get(MeetingConnection, (meeting.id, sid)) is None:
        db.add(
            MeetingConnection(
                meeting_id=meeting.id,
                sid=sid,
                participant_id=seat.id,
                device=device[:200],
                connected_at=now,
                process=process,
            )
        )
    ops: list[Op] = [Enter(sid, seat_channel(meeting.id, seat.id))]
    ops += [Enter(sid, room) for room in _room_rooms(seat)]
    if seat.state == SeatState.ADMITTED and seat.room is not None:
        ops.append(
            Emit(
                room_channel(meeting.id, seat.room),
                _peer_joined(seat, user.display_name),
                skip_sid=sid,
            )
        )
    on_commit(db, *ops)
    found = await _publish_states(db, meeting)
    await db.commit()
    return Joined(seat, found[seat.id])


async def drop_connection(db: AsyncSession, sid: str) -> None:
    """A socket went away. Its participant keeps their place (they come back to the same
    room); the others in that room are told, if it was the participant's last socket."""
    meeting_ids = list(
        await db.scalars(select(MeetingConnection.meeting_id).where(MeetingConnection.sid == sid))
    )
    for meeting_id in meeting_ids:
        meeting = await _lock(db, meeting_id)
        conn = await db.get(MeetingConnection, (meeting_id, sid))
        if conn is None:
            continue
        seat = await db.get(Participant, conn.participant_id, populate_existing=True)
        await db.delete(conn)
        await db.flush()
        gone = seat is not None and not await _sids(db, seat.id)
        if gone and seat is not None and seat.state == SeatState.ADMITTED and seat.room:
            on_commit(
                db,
                Emit(
                    room_channel(meeting_id, seat.room),
                    PeerLeft(meeting_id, seat.room, seat.user_id, "disconnected"),
                ),
            )
        await _publish_states(db, meeting)
    await db.commit()


async def process_alive(db: AsyncSession, process: str, now: datetime) -> None:
    """Record that the Socket.IO server process ``process`` is running."""
    found = await db.get(RealtimeProcess, process)
    if found is None:
        db.add(RealtimeProcess(id=process, started_at=now, seen_at=now))
    else:
        found.seen_at = now
    await db.commit()


async def sweep_dead_connections(db: AsyncSession, now: datetime, stale: timedelta) -> int:
    """Drop the connections held by processes not heard from for ``stale`` (crashed or
    killed): their participants show as reconnecting, and come back to their room when their
    client reconnects to a live process. Returns how many sockets were dropped."""
    alive = select(RealtimeProcess.id).where(RealtimeProcess.seen_at >= now - stale)
    sids = list(
        await db.scalars(
            select(MeetingConnection.sid).where(MeetingConnection.process.not_in(alive)).distinct()
        )
    )
    for sid in sids:
        await drop_connection(db, sid)
    await db.execute(delete(RealtimeProcess).where(RealtimeProcess.seen_at < now - 10 * stale))
    await db.commit()
    return len(sids)


# -- the mediator's controls ----------------------------------------------------------------


async def _managed(db: AsyncSession, meeting_id: int, actor_id: int) -> Meeting:
    meeting = await _lock(db, meeting_id)
    if meeting.mediator_id != actor_id:
        raise NotFound
    if meeting.status != MeetingStatus.OPEN:
        raise Refused("not_open", _l("This session is not in progress."))
    return meeting


async def _target(db: AsyncSession, meeting: Meeting, user_id: int) -> Participant:
    seat = await _seat(db, meeting.id, user_id)
    if seat is None or seat.side == Side.MEDIATOR:
        raise Refused("invalid_target", _l("There is no such participant in this session."))
    return seat


async def admit(db: AsyncSession, meeting_id: int, actor_id: int, user_id: int) -> None:
    """Let a waiting participant into the joint room."""
    meeting = await _managed(db, meeting_id, actor_id)
    seat = await _target(db, meeting, user_id)
    if seat.state != SeatState.WAITING:
        raise Refused("invalid_target", _l("This person is not waiting to come in."))
    seat.state = SeatState.ADMITTED.value
    seat.room = Room.JOINT.value
    seat.admitted_at = seat.updated_at = utcnow()
    sids = await _sids(db, seat.id)
    on_commit(
        db,
        *(Enter(sid, room) for sid in sids for room in _room_rooms(seat)),
        Emit(room_channel(meeting.id, seat.room), _peer_joined(seat, await _name(db, user_id))),
    )
    record(db, actor_id, "meeting.admit", "meeting", meeting.id, user=user_id)
    await _publish_states(db, meeting)
    await db.commit()


async def turn_away(db: AsyncSession, meeting_id: int, actor_id: int, user_id: int) -> None:
    """Refuse a waiting participant (they may knock again unless the session is locked)."""
    meeting = await _managed(db, meeting_id, actor_id)
    seat = await _target(db, meeting, user_id)
    if seat.state != SeatState.WAITING:
        raise Refused("invalid_target", _l("This person is not waiting to come in."))
    seat.state = SeatState.TURNED_AWAY.value
    seat.updated_at = utcnow()
    record(db, actor_id, "meeting.turn_away", "meeting", meeting.id, user=user_id)
    await _publish_states(db, meeting)
    await db.commit()


async def remove(db: AsyncSession, meeting_id: int, actor_id: int, user_id: int) -> None:
    """Send a participant out of the session for good."""
    meeting = await _managed(db, meeting_id, actor_id)
    seat = await _target(db, meeting, user_id)
    if seat.state not in (SeatState.WAITING, SeatState.ADMITTED):
        raise Refused("invalid_target", _l("This person is not in the session."))
    ops: list[Op] = []
    if seat.state == SeatState.ADMITTED and seat.room is not None:
        rooms = _room_rooms(seat)
        ops += [Leave(sid, room) for sid in await _sids(db, seat.id) for room in rooms]
        ops.append(
            Emit(
                room_channel(meeting.id, seat.room),
                PeerLeft(meeting.id, seat.room, seat.user_id, "removed"),
            )
        )
    seat.state = SeatState.REMOVED.value
    seat.room = None
    seat.updated_at = utcnow()
    on_commit(db, *ops)
    record(db, actor_id, "meeting.remove", "meeting", meeting.id, user=user_id)
    await _publish_states(db, meeting)
    await db.commit()


async def move(
    db: AsyncSession,
    meeting_id: int,
    actor_id: int,
    room: str,
    *,
    user_id: int | None = None,
    side: str | None = None,
) -> int:
    """Move one participant (the mediator included), or a whole side, into ``room``; or
    everyone (``side="all"``) back to the joint room. Returns how many moved.

    A side may only go to the joint room or its own caucus: the claimant's people never enter
    the firm's room, nor the firm's people the claimant's, nor an observer a caucus.
    """
    try:
        target = Room(room)
    except ValueError:
        raise Refused("invalid_room", _l("There is no such room.")) from None
    if target == Room.NOTES:
        raise Refused("invalid_room", _l("There is no such room."))
    if (user_id is None) == (side is None):
        raise Refused("invalid", _l("Say whom to move: one person or one side."))
    meeting = await _managed(db, meeting_id, actor_id)
    rows = [r for r in await seats(db, meeting) if r.participant.state == SeatState.ADMITTED]
    if user_id is not None:
        chosen = [r for r in rows if r.participant.user_id == user_id]
        if not chosen:
            raise Refused("invalid_target", _l("This person is not in the session."))
    elif side == "all":
        if target != Room.JOINT:
            raise Refused("invalid_room", _l("Everyone can only be brought to the joint room."))
        chosen = rows
    elif side in (Side.CLAIMANT, Side.RESPONDENT, Side.OBSERVER):
        chosen = [r for r in rows if r.participant.side == side]
    else:
        raise Refused("invalid_target", _l("There is no such participant in this session."))
    if any(target not in ENTERABLE[r.participant.side] for r in chosen):
        raise Refused("invalid_room", _l("This person cannot go into that room."))
    ops: list[Op] = []
    moved = 0
    for row in chosen:
        seat = row.participant
        if seat.room == target:
            continue
        before = seat.room
        sids = await _sids(db, seat.id)
        if before is not None:
            ops += [Leave(sid, room_channel(meeting.id, before)) for sid in sids]
            ops.append(
                Emit(
                    room_channel(meeting.id, before),
                    PeerLeft(meeting.id, before, seat.user_id, "moved"),
                )
            )
        seat.room = target.value
        seat.updated_at = utcnow()
        ops += [Enter(sid, room_channel(meeting.id, target)) for sid in sids]
        ops.append(Emit(room_channel(meeting.id, target), _peer_joined(seat, row.name)))
        moved += 1
    on_commit(db, *ops)
    detail = {"room": target.value, "user": user_id, "side": side}
    record(db, actor_id, "meeting.move", "meeting", meeting.id, **detail)
    await _publish_states(db, meeting)
    await db.commit()
    return moved


async def set_locked(db: AsyncSession, meeting_id: int, actor_id: int, locked: bool) -> None:
    meeting = await _managed(db, meeting_id, actor_id)
    meeting.locked = locked
    record(db, actor_id, "meeting.lock", "meeting", meeting.id, locked=locked)
    await _publish_states(db, meeting)
    await db.commit()


async def end_meeting(db: AsyncSession, meeting_id: int, actor_id: int, outcome: str) -> Meeting:
    """End the session with its outcome; everyone is told and every room is closed."""
    if outcome not in set(Outcome):
        raise Refused("invalid", _l("Choose one of the options."))
    meeting = await _managed(db, meeting_id, actor_id)
    from portal.meetings import recording  # it builds on this module
    from portal.meetings.recording_models import StopReason

    await recording.stop_all(db, meeting, StopReason.ENDED)
    meeting.status = MeetingStatus.ENDED.value
    meeting.outcome = outcome
    meeting.ended_at = utcnow()
    _timeline(db, meeting.case_id, actor_id, meeting, "ended")
    record(db, actor_id, "meeting.end", "meeting", meeting.id, outcome=outcome)
    await _publish_states(db, meeting)
    on_commit(db, *_close_ops(meeting, await _seat_ids(db, meeting)))
    await db.execute(delete(MeetingConnection).where(MeetingConnection.meeting_id == meeting.id))
    await db.commit()
    return meeting


# -- chat -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    message: ChatMessage
    duplicate: bool


def _chat_event(
    message: MeetingMessage, name: str, side: str, material: CaseMaterial | None = None
) -> ChatMessage:
    return ChatMessage(
        meeting_id=message.meeting_id,
        seq=message.seq,
        room=message.room,
        sender_id=message.sender_id,
        sender_name=name,
        side=side,
        client_id=message.client_id,
        text=message.body,
        sent_at=message.created_at.isoformat(),
        material_id=material.id if material else None,
        material_title=(material.title or material.filename) if material else "",
        material_url=f"/cases/{material.case_id}/materials/{material.id}" if material else "",
    )


def _message_query(meeting_id: int | BindParameter[Any]) -> Any:
    return (
        select(MeetingMessage, User.display_name, Participant.side, CaseMaterial)
        .join(User, User.id == MeetingMessage.sender_id)
        .outerjoin(CaseMaterial, CaseMaterial.id == MeetingMessage.material_id)
        .join(
            Participant,
            (Participant.meeting_id == MeetingMessage.meeting_id)
            & (Participant.user_id == MeetingMessage.sender_id),
        )
        .where(MeetingMessage.meeting_id == meeting_id)
    )


# The chat path's statements: built once and bound at each execution, and, where they load no
# objects, written on the tables so that they run past the ORM's machinery. Together these cut
# the database part of the path's CPU per message by about 40 % (bench/sessions.py).
_MEETINGS = cast(Table, Meeting.__table__)
_SEATS = cast(Table, Participant.__table__)
_USERS = cast(Table, User.__table__)
_MESSAGES = cast(Table, MeetingMessage.__table__)
_FIND_MESSAGE = _message_query(bindparam("meeting_id")).where(
    MeetingMessage.sender_id == bindparam("user_id"),
    MeetingMessage.client_id == bindparam("client_id"),
)


# The counters: a Meeting loaded in the session is not updated by them (none is, on the chat
# path; whoever reads last_seq selects it, as sync_messages does).
_TAKE_SEQS_ONE = (
    update(_MEETINGS)
    .where(
        _MEETINGS.c.id == bindparam("meeting_id"),
        _MEETINGS.c.status == MeetingStatus.OPEN.value,
    )
    .values(last_seq=_MEETINGS.c.last_seq + bindparam("count"))
    .returning(_MEETINGS.c.id, _MEETINGS.c.last_seq)
)


def _take_seqs(counts: Mapping[int, int]) -> tuple[Any, dict[str, Any]]:
    """Move each open session's counter on by its count of messages; returns (id, last_seq)
    for each, which locks those rows to the commit (on SQLite, the database). One session
    (always so on PostgreSQL, which stores each message on its own) by a statement compiled
    once; several by one statement."""
    if len(counts) == 1:
        ((meeting_id, count),) = counts.items()
        return _TAKE_SEQS_ONE, {"meeting_id": meeting_id, "count": count}
    return (
        update(_MEETINGS)
        .where(_MEETINGS.c.id.in_(sorted(counts)), _MEETINGS.c.status == MeetingStatus.OPEN.value)
        .values(last_seq=_MEETINGS.c.last_seq + case(dict(counts), value=_MEETINGS.c.id, else_=0))
        .returning(_MEETINGS.c.id, _MEETINGS.c.last_seq)
    ), {}


# Gives back numbers taken for messages then refused: only ever in the transaction that took
# them, with the row still locked, so they were the last ones taken.
_GIVE_BACK = (
    update(_MEETINGS)
    .where(_MEETINGS.c.id == bindparam("meeting_id"))
    .values(last_seq=_MEETINGS.c.last_seq - bindparam("count"))
)
_SENDERS = (
    select(
        _SEATS.c.meeting_id,
        _SEATS.c.user_id,
        _SEATS.c.side,
        _SEATS.c.state,
        _SEATS.c.room,
        _USERS.c.display_name,
    )
    .join(_USERS, _USERS.c.id == _SEATS.c.user_id)
    .where(
        _SEATS.c.meeting_id.in_(bindparam("meeting_ids", expanding=True)),
        _SEATS.c.user_id.in_(bindparam("user_ids", expanding=True)),
    )
)


async def find_message(
    db: AsyncSession, meeting_id: int, user_id: int, client_id: str
) -> Posted | None:
    """The message this sender already stored under ``client_id``, if any (a retry)."""
    key = {"meeting_id": meeting_id, "user_id": user_id, "client_id": client_id}
    row = (await db.execute(_FIND_MESSAGE, key)).first()
    if row is None:
        return None
    message, name, side, material = row
    return Posted(_chat_event(message, name, side, material), duplicate=True)


def _check_message(client_id: str, text: str) -> str:
    if not CLIENT_ID.fullmatch(client_id):
        raise Refused("invalid", _l("The message is not valid."))
    text = text.strip()
    if not text:
        raise Refused("invalid", _l("Write a message first."))
    if len(text) > MAX_MESSAGE:
        raise Refused(
            "too_large", _l("A message can have at most {count} characters.", count=MAX_MESSAGE)
        )
    return text


# The policy's check "may this identity view this evidence item" (the socket handler's).
MayView = Callable[[Identity, Item], bool]


async def _material_for(db: AsyncSession, meeting_id: int, material_id: int) -> Item:
    material = await db.get(CaseMaterial, material_id)
    case = await db.scalar(
        select(Case).join(Meeting, Meeting.case_id == Case.id).where(Meeting.id == meeting_id)
    )
    if material is None or case is None or material.case_id != case.id:
        raise Refused("invalid_target", _l("There is no such evidence item in this case."))
    return Item(material, case)


def _room_readers(case: Case, room: str) -> list[Identity]:
    """Who may read a room, as the evidence policy knows them: the claimant, and the firm's
    representatives (the mediator may view every item of their case)."""
    claimant = Identity(user_id=case.filer_id, role=Role.CONSUMER)
    firm = (
        [Identity(user_id=0, role=Role.FIRM_REP, firm_id=case.respondent_firm_id)]
        if case.respondent_firm_id is not None
        else []
    )
    return {
        Room.JOINT: [claimant, *firm],
        Room.CAUCUS_CLAIMANT: [claimant],
        Room.CAUCUS_RESPONDENT: firm,
    }.get(Room(room), [])


def _check_shown(item: Item, room: str, may_view: MayView | None) -> None:
    if may_view is None or not all(may_view(who, item) for who in _room_readers(item.case, room)):
        raise Refused(
            "not_shared",
            _l("Not everyone in this room may see that evidence item, so it cannot be shown here."),
        )


def _chat_room(side: str, current: str | None, requested: str | None) -> str:
    if current is None:
        raise Refused("not_admitted", _l("You are not in the session yet."))
    if requested is None or requested == current:
        return current
    if requested == Room.NOTES and side == Side.MEDIATOR:
        return requested
    raise Refused("invalid_room", _l("You cannot write to that room."))


@dataclass(frozen=True)
class ChatPost:
    """One chat message as its sender asked for it (checked when it is stored)."""

    meeting_id: int
    user_id: int
    client_id: str
    text: str
    room: str | None = None
    material_id: int | None = None


# Lets a message that is not a retry through, or raises Refused (the socket layer's rate
# limit: a retry of a stored message is answered, never limited).
Admit = Callable[[ChatPost], None]
Key = tuple[int, int, str]  # meeting, sender, client id

_STORED_KEYS = select(_MESSAGES.c.meeting_id, _MESSAGES.c.sender_id, _MESSAGES.c.client_id).where(
    _MESSAGES.c.meeting_id.in_(bindparam("meeting_ids", expanding=True)),
    _MESSAGES.c.client_id.in_(bindparam("client_ids", expanding=True)),
)


async def _stored_keys(db: AsyncSession, posts: Sequence[ChatPost]) -> set[Key]:
    """Which of these messages are stored already (retries): one look for all of them."""
    rows = await db.execute(
        _STORED_KEYS,
        {
            "meeting_ids": sorted({p.meeting_id for p in posts}),
            "client_ids": sorted({p.client_id for p in posts}),
        },
    )
    return {(m, u, c) for m, u, c in rows}


@dataclass
class _Pending:
    """A message to store, checked as far as it can be before its session's row is locked."""

    index: int  # its place in the batch
    post: ChatPost
    text: str
    material: Item | None


def _place(pending: _Pending, sender: Any, may_view: MayView | None) -> str:
    """The room the message goes to from an admitted sender, or :class:`Refused`."""
    target = _chat_room(sender.side, sender.room, pending.post.room)
    if pending.material is not None:
        _check_shown(pending.material, target, may_view)
    return target


async def _store(
    db: AsyncSession,
    pending: list[_Pending],
    may_view: MayView | None,
    answers: list[Posted | Refused | None],
) -> None:
    """Number, place and insert the messages: four statements however many there are."""
    counts = Counter(p.post.meeting_id for p in pending)
    statement, params = _take_seqs(counts)
    tops: dict[int, int] = dict((await db.execute(statement, params)).all())
    senders = {
        (row.meeting_id, row.user_id): row
        for row in await db.execute(
            _SENDERS,
            {
                "meeting_ids": sorted(counts),
                "user_ids": sorted({p.post.user_id for p in pending}),
            },
        )
    }
    next_seq = {m: top - counts[m] + 1 for m, top in tops.items()}
    refused: Counter[int] = Counter()
    rows: list[dict[str, Any]] = []
    for p in pending:
        post = p.post
        try:
            if post.meeting_id not in tops:
                raise Refused("not_open", _l("This session is not in progress."))
            sender = senders.get((post.meeting_id, post.user_id))
            if sender is None or sender.state != SeatState.ADMITTED:
                raise Refused("not_admitted", _l("You are not in the session yet."))
            target = _place(p, sender, may_view)
        except Refused as refusal:
            answers[p.index] = refusal
            if post.meeting_id in tops:
                refused[post.meeting_id] += 1
            continue
        message = MeetingMessage(
            meeting_id=post.meeting_id,
            seq=next_seq[post.meeting_id],
            room=target,
            sender_id=post.user_id,
            client_id=post.client_id,
            body=p.text,
            created_at=utcnow(),
            material_id=p.material.material.id if p.material else None,
        )
        next_seq[post.meeting_id] += 1
        rows.append({c: getattr(message, c) for c in _MESSAGE_COLUMNS})
        shown = p.material.material if p.material is not None else None
        event = _chat_event(message, sender.display_name, sender.side, shown)
        on_commit(db, Emit(room_channel(post.meeting_id, target), event))
        answers[p.index] = Posted(event, duplicate=False)
    for meeting_id, count in refused.items():
        await db.execute(_GIVE_BACK, {"meeting_id": meeting_id, "count": count})
    if rows:
        await db.execute(insert(_MESSAGES), rows)


_MESSAGE_COLUMNS = (
    "meeting_id",
    "seq",
    "room",
    "sender_id",
    "client_id",
    "body",
    "created_at",
    "material_id",
)


async def post_messages(
    db: AsyncSession,
    posts: Sequence[ChatPost],
    may_view: MayView | None = None,
    admit: Admit | None = None,
) -> list[Posted | Refused]:
    """Store messages, each in its sender's room (or the mediator's notes) under its session's
    next sequence number, in one transaction, and queue each for its room; one answer per
    message, in order: the message stored, or why it was refused. A retry (a client id this
    sender already used in this session) is answered with the message stored the first time.

    ``material_id`` shows an evidence item of the case with the message: refused unless
    ``may_view`` (the policy's "view" check) allows it to every side that may read the room.
    ``admit`` sees each message that is not a retry before it is stored, and may refuse it.

    Several messages in one commit is how SQLite keeps up (a commit waits for the disk), and
    the same few statements for all of them is what keeps the CPU per message down
    (bench/sessions.py). Should the transaction fail (a retry stored by another process
    between the look for retries and the insert), nothing is stored and the error is raised:
    the caller posts the messages again one by one.
    """
    answers: list[Posted | Refused | None] = [None] * len(posts)
    stored = await _stored_keys(db, posts)
    first: dict[Key, int] = {}  # where in the batch each new message is
    retries: list[tuple[int, int]] = []  # (retry, its first try) within the batch
    pending: list[_Pending] = []
    for index, post in enumerate(posts):
        key = (post.meeting_id, post.user_id, post.client_id)
        try:
            text = _check_message(post.client_id, post.text)
            if key in first:
                retries.append((index, first[key]))
                continue
            if key in stored and (found := await find_message(db, *key)) is not None:
                answers[index] = found
                continue
            if admit is not None:
                admit(post)
            material = None
            if post.material_id is not None:
                material = await _material_for(db, post.meeting_id, post.material_id)
        except Refused as refusal:
            answers[index] = refusal
            continue
        first[key] = index
        pending.append(_Pending(index, post, text, material))
    if pending:
        await _store(db, pending, may_view, answers)
    for index, original in retries:
        answer = answers[original]
        answers[index] = Posted(answer.message, True) if isinstance(answer, Posted) else answer
    await db.commit()
    return [a for a in answers if a is not None]


async def post_message(
    db: AsyncSession,
    meeting_id: int,
    user_id: int,
    *,
    client_id: str,
    text: str,
    room: str | None = None,
    material_id: int | None = None,
    may_view: MayView | None = None,
    admit: Admit | None = None,
) -> Posted:
    """One message, as :func:`post_messages`; raises :class:`Refused` if it is refused."""
    post = ChatPost(meeting_id, user_id, client_id, text, room, material_id)
    try:
        (answer,) = await post_messages(db, [post], may_view, admit)
    except IntegrityError:
        # The same client id, stored by a retry that got here first: that one stands.
        await db.rollback()
        existing = await find_message(db, meeting_id, user_id, client_id)
        if existing is None:
            raise
        return existing
    if isinstance(answer, Refused):
        await db.rollback()
        raise answer
    return answer


@dataclass(frozen=True)
class Synced:
    messages: list[ChatMessage]
    upto: int  # every message the participant may read up to here is in ``messages``
    more: bool  # call again with after_seq=upto for the rest


async def sync_messages(
    db: AsyncSession, meeting_id: int, user_id: int, after_seq: int, limit: int = SYNC_LIMIT
) -> Synced:
    """The messages after ``after_seq`` in the rooms this participant may read: the joint
    room, their own side's caucus; the mediator all of them and the notes."""
    if after_seq < 0:
        raise Refused("invalid", _l("The request is not valid."))
    last_seq = await db.scalar(select(Meeting.last_seq).where(Meeting.id == meeting_id))
    seat = await _seat(db, meeting_id, user_id)
    if last_seq is None or seat is None:
        raise NotFound
    if seat.state != SeatState.ADMITTED:
        raise Refused("not_admitted", _l("You are not in the session yet."))
    rows = list(
        await db.execute(
            _message_query(meeting_id)
            .where(
                MeetingMessage.seq > after_seq,
                MeetingMessage.seq <= last_seq,
                MeetingMessage.room.in_([r.value for r in READABLE[seat.side]]),
            )
            .order_by(MeetingMessage.seq)
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    messages = [_chat_event(m, name, side, material) for m, name, side, material in rows]
    upto = messages[-1].seq if more else last_seq
    return Synced(messages, upto, more)


async def message_count(db: AsyncSession, meeting_id: int) -> int:
    return int(
        await db.scalar(
            select(func.count())
            .select_from(MeetingMessage)
            .where(MeetingMessage.meeting_id == meeting_id)
        )
        or 0
    )


# -- typing and signaling (relayed, not stored) ---------------------------------------------


async def _present(db: AsyncSession, meeting_id: int, user_id: int) -> tuple[Meeting, Participant]:
    meeting = await db.get(Meeting, meeting_id, populate_existing=True)
    seat = await _seat(db, meeting_id, user_id)
    if meeting is None or seat is None:
        raise NotFound
    if meeting.status != MeetingStatus.OPEN:
        raise Refused("not_open", _l("This session is not in progress."))
    if seat.state != SeatState.ADMITTED or seat.room is None:
        raise Refused("not_admitted", _l("You are not in the session yet."))
    return meeting, seat


async def typing(db: AsyncSession, meeting_id: int, user_id: int, sid: str) -> list[Op]:
    """Tell the others in the sender's room that the sender is typing."""
    _, seat = await _present(db, meeting_id, user_id)
    assert seat.room is not None
    event = Typing(meeting_id, seat.room, user_id, await _name(db, user_id))
    return [Emit(room_channel(meeting_id, seat.room), event, skip_sid=sid)]


SIGNAL_KEYS = frozenset({"description", "candidate", "restart"})


def check_signal_payload(data: dict[str, Any]) -> None:
    if not data or not set(data) <= SIGNAL_KEYS:
        raise Refused("invalid", _l("The request is not valid."))
    if len(json.dumps(data, separators=(",", ":"))) > MAX_SIGNAL_BYTES:
        raise Refused("too_large", _l("The request is too large."))


async def relay_signal(
    db: AsyncSession, meeting_id: int, user_id: int, to_user_id: int, data: dict[str, Any]
) -> list[Op]:
    """A WebRTC signaling message (an SDP description or an ICE candidate) for one peer, who
    must be connected and in the sender's current room; anything else is refused."""
    check_signal_payload(data)
    meeting, seat = await _present(db, meeting_id, user_id)
    if meeting.mode == Mode.TEXT:
        raise Refused("no_media", _l("This session is text only."))
    peer = await _seat(db, meeting_id, to_user_id)
    if (
        peer is None
        or peer.id == seat.id
        or peer.state != SeatState.ADMITTED
        or peer.room != seat.room
        or not await _sids(db, peer.id)
    ):
        raise Refused("invalid_target", _l("That person is not in your room."))
    room = await db.scalars(
        select(Participant).where(
            Participant.meeting_id == meeting_id, Participant.room == seat.room
        )
    )
    members = media_members(list(room), await _connected(db, meeting))
    if seat.id not in members or peer.id not in members:
        raise Refused("room_full", ROOM_FULL)
    return [Emit(seat_channel(meeting_id, peer.id), Signal(meeting_id, user_id, data))]


MEDIA_ACTIONS = frozenset({"mute_audio", "mute_video", "ask_unmute"})
QUALITIES = frozenset({"good", "fair", "poor", "unknown"})


async def request_media(
    db: AsyncSession, meeting_id: int, actor_id: int, user_id: int, action: str
) -> None:
    """The mediator mutes a participant's microphone or camera, or asks them to unmute.

    The participant's client obeys a mute at once; unmuting is always the participant's own
    choice (the client asks them).
    """
    if action not in MEDIA_ACTIONS:
        raise Refused("invalid", _l("The request is not valid."))
    meeting = await _managed(db, meeting_id, actor_id)
    if meeting.mode == Mode.TEXT:
        raise Refused("no_media", _l("This session is text only."))
    seat = await _target(db, meeting, user_id)
    if seat.state != SeatState.ADMITTED:
        raise Refused("invalid_target", _l("This person is not in the session."))
    event = MediaRequest(meeting.id, action, await _name(db, actor_id))
    on_commit(db, Emit(seat_channel(meeting.id, seat.id), event))
    record(db, actor_id, "meeting.media", "meeting", meeting.id, user=user_id, media=action)
    await db.commit()


async def relay_presence(
    db: AsyncSession,
    meeting_id: int,
    user_id: int,
    sid: str,
    *,
    audio: bool,
    video: bool,
    quality: str,
) -> list[Op]:
    """Tell the others in the sender's room whether the sender's microphone and camera are on
    and how good their connection is (not stored: each client says it again when someone
    new comes into its room)."""
    if quality not in QUALITIES:
        raise Refused("invalid", _l("The request is not valid."))
    _, seat = await _present(db, meeting_id, user_id)
    assert seat.room is not None
    event = Presence(meeting_id, seat.room, user_id, audio, video, quality)
    return [Emit(room_channel(meeting_id, seat.room), event, skip_sid=sid)]
