"""Live sessions, service level, on both databases: scheduling, the waiting room, rooms, chat
sequence numbers, replays, and the live operations each change queues for after its commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.accounts.service import identity_of
from portal.cases.models import Case, CaseEvent
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.live import CloseRoom, Emit, Enter, Leave, Op, committed
from portal.meetings import service as meetings
from portal.meetings.models import Meeting, MeetingMessage, Participant
from portal.meetings.service import Refused, room_channel, seat_channel
from portal.notify.models import Notification
from portal.policy import Role
from realtime.events import ChatMessage, MeetingState, PeerJoined
from tests.factories import Person, make_case, make_meeting, make_user, verify_phone
from tests.meetings.conftest import Cast, build_cast

T = TypeVar("T")


async def run(app: Any, call: Callable[[AsyncSession], Awaitable[T]]) -> tuple[T, list[Op]]:
    """Run a service call in its own session; return its result and the operations its
    committed transactions queued."""
    async with app.starlette.state.db() as db:
        result = await call(db)
    return result, committed(db)


async def join(app: Any, person: Person, meeting_id: int, sid: str) -> tuple[Any, list[Op]]:
    async def call(db: AsyncSession) -> Any:
        user = await db.get(User, person.id)
        assert user is not None
        resource = await meetings.access(db, meeting_id)
        return await meetings.join_meeting(db, resource, user, sid, device="test")

    return await run(app, call)


async def drop(app: Any, sid: str) -> list[Op]:
    _, ops = await run(app, lambda db: meetings.drop_connection(db, sid))
    return ops


async def say(
    app: Any, person: Person, meeting_id: int, text: str, client_id: str, room: str | None = None
) -> meetings.Posted:
    posted, _ = await run(
        app,
        lambda db: meetings.post_message(
            db, meeting_id, person.id, client_id=client_id, text=text, room=room
        ),
    )
    return posted


async def seated(app: Any, cast: Cast, *people: Person) -> None:
    """The mediator opens the session; each person knocks and is let in."""
    await join(app, cast.mediator, cast.meeting_id, "sid-mediator")
    for n, person in enumerate(people):
        await join(app, person, cast.meeting_id, f"sid-{n}-{person.id}")
        await run(
            app, lambda db, p=person: meetings.admit(db, cast.meeting_id, cast.mediator.id, p.id)
        )


def emits(ops: list[Op]) -> list[tuple[str, str]]:
    return [(op.room, op.event.EVENT) for op in ops if isinstance(op, Emit)]


async def test_scheduling_invites_the_parties_and_tells_them(app: Any) -> None:
    cast = await build_cast(app)
    async with app.starlette.state.db() as db:
        seats = {
            p.user_id: (p.side, p.state)
            for p in await db.scalars(
                select(Participant).where(Participant.meeting_id == cast.meeting_id)
            )
        }
        told = list(
            await db.execute(
                select(Notification.user_id, Notification.link).where(
                    Notification.channel == "in_app", Notification.title_msgid.like("%session%")
                )
            )
        )
        timeline = await db.scalar(
            select(CaseEvent).where(CaseEvent.case_id == cast.case_id, CaseEvent.kind == "meeting")
        )
    assert seats == {
        cast.mediator.id: ("mediator", "invited"),
        cast.claimant.id: ("claimant", "invited"),
        cast.rep1.id: ("respondent", "invited"),
        cast.rep2.id: ("respondent", "invited"),
        cast.observer.id: ("observer", "invited"),
    }
    link = f"/meetings/{cast.meeting_id}"
    assert sorted(told) == sorted(
        (p.id, link) for p in (cast.claimant, cast.rep1, cast.rep2, cast.observer)
    )
    assert timeline is not None and timeline.data["action"] == "scheduled"


async def test_only_the_cases_mediator_schedules_and_only_a_sensible_plan(app: Any) -> None:
    cast = await build_cast(app)
    state = app.starlette.state
    soon = utcnow() + timedelta(hours=2)

    async def schedule(person: Person, **plan: Any) -> Any:
        async with state.db() as db:
            user = await db.get(User, person.id)
            case = await db.get(Case, cast.case_id)
            assert user is not None and case is not None
            values = {"starts_at": soon, "duration_minutes": 60, "mode": "video", **plan}
            return await meetings.schedule_meeting(db, case, user, **values)

    with pytest.raises(NotFound):
        await schedule(cast.observer)  # a mediator, but not this case's
    for plan, field in [
        ({"starts_at": utcnow() - timedelta(hours=1)}, "starts_at"),
        ({"starts_at": utcnow() + timedelta(days=400)}, "starts_at"),
        ({"mode": "hologram"}, "mode"),
        ({"duration_minutes": 7}, "duration"),
        ({"observer_ids": [cast.stranger.id]}, "observers"),
        ({"observer_ids": [cast.mediator.id]}, "observers"),
    ]:
        with pytest.raises(DomainError) as refused:
            await schedule(cast.mediator, **plan)
        assert refused.value.field == field, plan
    second = await schedule(cast.mediator, mode="text", duration_minutes=30)
    assert second.status == "scheduled"
    # A case not yet with its mediator has no sessions.
    consumer = await make_user(app, Role.CONSUMER, phone="13911112222")
    await verify_phone(app, consumer)
    fresh = await make_case(app, consumer, None, status="accepted")
    with pytest.raises((DomainError, NotFound)):
        await make_meeting(app, fresh, cast.mediator)


async def test_the_policy_lets_in_the_parties_and_lets_only_the_mediator_run_it(app: Any) -> None:
    cast = await build_cast(app)
    policy = app.starlette.state.policy
    async with app.starlette.state.db() as db:
        resource = await meetings.access(db, cast.meeting_id)
        users = {
            p.id: await db.get(User, p.id) for p in vars(cast).values() if isinstance(p, Person)
        }
    expected = {
        cast.mediator.id: {"view", "join", "manage"},
        cast.claimant.id: {"view", "join"},
        cast.rep1.id: {"view", "join"},
        cast.rep2.id: {"view", "join"},
        cast.observer.id: {"view", "join"},
        cast.stranger.id: set(),
        cast.other_rep.id: set(),
    }
    for user_id, allowed in expected.items():
        who = identity_of(users[user_id])
        got = {p for p in ("view", "join", "manage") if policy.permits(who, p, resource)}
        assert got == allowed, user_id


async def test_early_arrivals_wait_and_reconnecting_never_bypasses_the_waiting_room(
    app: Any,
) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    early, ops = await join(app, cast.claimant, mid, "c1")
    assert early.state.you.state == "waiting" and early.state.status == "scheduled"
    assert early.state.mediator == "away"
    # Only their own channel: no room's.
    assert [op for op in ops if isinstance(op, Enter)] == [
        Enter("c1", seat_channel(mid, early.participant.id))
    ]
    with pytest.raises(Refused) as refused:
        await say(app, cast.claimant, mid, "我先说", "early-1")
    assert refused.value.code == "not_open"
    with pytest.raises(Refused):
        await run(app, lambda db: meetings.sync_messages(db, mid, cast.claimant.id, 0))
    # Reconnecting does not let them in either.
    await drop(app, "c1")
    again, ops = await join(app, cast.claimant, mid, "c2")
    assert again.state.you.state == "waiting"
    assert not any(isinstance(op, Enter) and op.room.endswith(":joint") for op in ops)

    async def case_status(db: AsyncSession) -> tuple[str, int]:
        case = await db.get(Case, cast.case_id, populate_existing=True)
        assert case is not None
        moves = await db.scalar(
            select(func.count(CaseEvent.id)).where(
                CaseEvent.case_id == cast.case_id, CaseEvent.to_status == "in_mediation"
            )
        )
        return case.status, moves or 0

    assert (await run(app, case_status))[0] == ("assigned", 0)
    opened, ops = await join(app, cast.mediator, mid, "m1")
    assert opened.state.status == "open" and opened.state.you.room == "joint"
    # Opening the first session starts the mediation: the case moves, on its timeline too.
    assert (await run(app, case_status))[0] == ("in_mediation", 1)
    assert Enter("m1", room_channel(mid, "joint")) in ops
    assert Enter("m1", room_channel(mid, "notes")) in ops
    waiting = [s for s in opened.state.seats if s.state == "waiting"]
    assert [s.user_id for s in waiting] == [cast.claimant.id] and waiting[0].connected
    # The claimant, still waiting, is told the mediator has arrived.
    claimant_seat = again.participant.id
    assert (seat_channel(mid, claimant_seat), MeetingState.EVENT) in emits(ops)

    _, ops = await run(app, lambda db: meetings.admit(db, mid, cast.mediator.id, cast.claimant.id))
    assert Enter("c2", room_channel(mid, "joint")) in ops
    assert (room_channel(mid, "joint"), PeerJoined.EVENT) in emits(ops)
    await drop(app, "c2")
    back, ops = await join(app, cast.claimant, mid, "c3")
    assert back.state.you.state == "admitted" and back.state.you.room == "joint"
    assert Enter("c3", room_channel(mid, "joint")) in ops

    # Turned away: may knock again, unless the session is locked.
    await join(app, cast.rep1, mid, "r1")
    await run(app, lambda db: meetings.turn_away(db, mid, cast.mediator.id, cast.rep1.id))
    again, _ = await join(app, cast.rep1, mid, "r1")
    assert again.state.you.state == "waiting"
    await run(app, lambda db: meetings.turn_away(db, mid, cast.mediator.id, cast.rep1.id))
    await run(app, lambda db: meetings.set_locked(db, mid, cast.mediator.id, True))
    for person, sid in ((cast.rep1, "r2"), (cast.rep2, "q1")):
        with pytest.raises(Refused) as refused:
            await join(app, person, mid, sid)
        assert refused.value.code == "locked"
    # Removed: gone for good.
    await run(app, lambda db: meetings.remove(db, mid, cast.mediator.id, cast.claimant.id))
    with pytest.raises(Refused) as refused:
        await join(app, cast.claimant, mid, "c4")
    assert refused.value.code == "removed"
    # Someone with no part in the case never gets a seat, even asking the service directly.
    with pytest.raises(NotFound):
        await join(app, cast.stranger, mid, "s1")


async def test_rooms_keep_each_side_to_its_own(app: Any) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    await seated(app, cast, cast.claimant, cast.rep1, cast.observer)

    async def move(room: str, **target: Any) -> tuple[int, list[Op]]:
        return await run(app, lambda db: meetings.move(db, mid, cast.mediator.id, room, **target))

    for room, target, code in [
        ("caucus_respondent", {"user_id": cast.claimant.id}, "invalid_room"),
        ("caucus_claimant", {"side": "respondent"}, "invalid_room"),
        ("caucus_claimant", {"user_id": cast.observer.id}, "invalid_room"),
        ("notes", {"user_id": cast.mediator.id}, "invalid_room"),
        ("lobby", {"side": "claimant"}, "invalid_room"),
        ("caucus_claimant", {"side": "all"}, "invalid_room"),
        ("joint", {"side": "mediator"}, "invalid_target"),
        ("joint", {"user_id": cast.stranger.id}, "invalid_target"),
        ("joint", {}, "invalid"),
    ]:
        with pytest.raises(Refused) as refused:
            await move(room, **target)
        assert refused.value.code == code, (room, target)
    moved, ops = await move("caucus_respondent", side="respondent")
    assert moved == 1
    assert Leave(f"sid-1-{cast.rep1.id}", room_channel(mid, "joint")) in ops
    assert Enter(f"sid-1-{cast.rep1.id}", room_channel(mid, "caucus_respondent")) in ops
    # Everyone learns their new state; a party sees only who is in their room.
    states = {
        op.event.you.user_id: op.event
        for op in ops
        if isinstance(op, Emit) and isinstance(op.event, MeetingState)
    }
    assert {s.user_id for s in states[cast.claimant.id].seats} == {
        cast.observer.id,
        cast.mediator.id,
    }
    assert {s.user_id for s in states[cast.rep1.id].seats} == set()
    assert states[cast.claimant.id].mediator == "here"
    _, ops = await move("caucus_respondent", user_id=cast.mediator.id)
    states = {
        op.event.you.user_id: op.event
        for op in ops
        if isinstance(op, Emit) and isinstance(op.event, MeetingState)
    }
    assert states[cast.claimant.id].mediator == "caucus"
    assert states[cast.rep1.id].mediator == "here"
    assert len(states[cast.mediator.id].seats) == 4  # the mediator sees everyone, invited too
    moved, _ = await move("joint", side="all")
    assert moved == 2


async def test_sequence_numbers_are_unique_and_gap_free_under_concurrency(app: Any) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    await seated(app, cast, cast.claimant)
    writers = [cast.mediator, cast.claimant] * 10
    posted = await asyncio.gather(
        *(say(app, p, mid, f"第{n}条", f"m{n}") for n, p in enumerate(writers))
    )
    assert sorted(p.message.seq for p in posted) == list(range(1, 21))
    # The same client id sent five times at once: one message.
    copies = await asyncio.gather(
        *(say(app, cast.claimant, mid, "重发", "again") for _ in range(5))
    )
    assert len({c.message.seq for c in copies}) == 1
    assert sum(not c.duplicate for c in copies) == 1
    async with app.starlette.state.db() as db:
        assert await meetings.message_count(db, mid) == 21
        meeting = await db.get(Meeting, mid)
    assert meeting is not None and meeting.last_seq == 21


async def test_messages_stored_together_are_each_answered_and_numbered_without_gaps(
    app: Any,
) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    await seated(app, cast, cast.claimant)
    await join(app, cast.rep1, mid, "sid-waiting")  # knocked, not let in
    post = meetings.ChatPost
    batch = [
        post(mid, cast.claimant.id, "a", "第一条"),
        post(mid, cast.rep1.id, "b", "还没进来"),  # not admitted: refused after its number
        post(mid, cast.claimant.id, "c", "偷看笔记", room="notes"),  # forged room
        post(mid, cast.claimant.id, "a", "第一条"),  # a retry in the same batch
        post(mid, cast.claimant.id, "d", "   "),  # empty
        post(mid, cast.mediator.id, "e", "记一笔", room="notes"),
        post(mid, cast.claimant.id, "f", "第二条"),
    ]
    answers, ops = await run(app, lambda db: meetings.post_messages(db, batch))
    codes = [a.code if isinstance(a, Refused) else None for a in answers]
    assert codes == [None, "not_admitted", "invalid_room", None, "invalid", None, None]
    stored = [a for a in answers if not isinstance(a, Refused)]
    assert [(p.message.seq, p.duplicate) for p in stored] == [
        (1, False),
        (1, True),
        (2, False),
        (3, False),
    ]
    # One event per message stored, in order, each to its own room.
    assert emits(ops) == [
        (room_channel(mid, "joint"), ChatMessage.EVENT),
        (room_channel(mid, "notes"), ChatMessage.EVENT),
        (room_channel(mid, "joint"), ChatMessage.EVENT),
    ]
    async with app.starlette.state.db() as db:
        meeting = await db.get(Meeting, mid)
        rows = list(
            await db.execute(
                select(MeetingMessage.seq, MeetingMessage.body)
                .where(MeetingMessage.meeting_id == mid)
                .order_by(MeetingMessage.seq)
            )
        )
    assert meeting is not None and meeting.last_seq == 3
    assert [tuple(r) for r in rows] == [(1, "第一条"), (2, "记一笔"), (3, "第二条")]
    # A later message carries on from there; a batch of refusals changes nothing.
    refused, _ = await run(app, lambda db: meetings.post_messages(db, batch[1:3]))
    assert all(isinstance(a, Refused) for a in refused)
    assert (await say(app, cast.claimant, mid, "第三条", "g")).message.seq == 4


async def test_replay_gives_each_side_only_the_rooms_it_may_read(app: Any) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    await seated(app, cast, cast.claimant, cast.rep1, cast.observer)

    async def move(room: str, **target: Any) -> None:
        await run(app, lambda db: meetings.move(db, mid, cast.mediator.id, room, **target))

    await say(app, cast.claimant, mid, "大家好", "c-1")
    await move("caucus_respondent", side="respondent")
    await move("caucus_respondent", user_id=cast.mediator.id)
    firm_secret = await say(app, cast.rep1, mid, "公司底线五千", "r-1")
    assert firm_secret.message.room == "caucus_respondent"
    note = await say(app, cast.mediator, mid, "公司可让步", "n-1", room="notes")
    assert note.message.room == "notes"
    await move("caucus_claimant", side="claimant")
    await move("caucus_claimant", user_id=cast.mediator.id)
    _, ops = await run(
        app,
        lambda db: meetings.post_message(
            db, mid, cast.claimant.id, client_id="c-2", text="我可以接受三千", room=None
        ),
    )
    assert emits(ops) == [(room_channel(mid, "caucus_claimant"), ChatMessage.EVENT)]
    # Forged rooms are refused and nothing is stored.
    for room in ("caucus_respondent", "notes", "joint", "lobby"):
        with pytest.raises(Refused) as refused:
            await say(app, cast.claimant, mid, "偷看", f"forged-{room}", room=room)
        assert refused.value.code == "invalid_room"

    async def texts(person: Person, after: int = 0) -> list[str]:
        synced, _ = await run(app, lambda db: meetings.sync_messages(db, mid, person.id, after))
        return [m.text for m in synced.messages]

    assert await texts(cast.claimant) == ["大家好", "我可以接受三千"]
    assert await texts(cast.rep1) == ["大家好", "公司底线五千"]
    assert await texts(cast.observer) == ["大家好"]
    assert await texts(cast.mediator) == ["大家好", "公司底线五千", "公司可让步", "我可以接受三千"]
    assert await texts(cast.mediator, after=2) == ["公司可让步", "我可以接受三千"]
    page, _ = await run(app, lambda db: meetings.sync_messages(db, mid, cast.mediator.id, 0, 2))
    assert page.more and page.upto == 2 and [m.seq for m in page.messages] == [1, 2]
    rest, _ = await run(app, lambda db: meetings.sync_messages(db, mid, cast.mediator.id, 2, 2))
    assert not rest.more and rest.upto == 4
    with pytest.raises(Refused):
        await run(app, lambda db: meetings.sync_messages(db, mid, cast.mediator.id, -1))
    with pytest.raises(NotFound):
        await run(app, lambda db: meetings.sync_messages(db, mid, cast.stranger.id, 0))
    # A waiting participant reads nothing.
    await join(app, cast.rep2, mid, "q1")
    with pytest.raises(Refused) as refused:
        await run(app, lambda db: meetings.sync_messages(db, mid, cast.rep2.id, 0))
    assert refused.value.code == "not_admitted"
    for bad, code in [("", "invalid"), (" \n ", "invalid"), ("长" * 2001, "too_large")]:
        with pytest.raises(Refused) as refused:
            await say(app, cast.claimant, mid, bad, "bad-text")
        assert refused.value.code == code
    with pytest.raises(Refused):
        await say(app, cast.claimant, mid, "hi", "not a valid id!")


async def test_ending_closes_every_room_and_stops_everything(app: Any) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    await seated(app, cast, cast.claimant)
    with pytest.raises(NotFound):
        await run(app, lambda db: meetings.end_meeting(db, mid, cast.claimant.id, "settled"))
    with pytest.raises(Refused):
        await run(app, lambda db: meetings.end_meeting(db, mid, cast.mediator.id, "won"))
    ended, ops = await run(
        app, lambda db: meetings.end_meeting(db, mid, cast.mediator.id, "settled")
    )
    assert ended.status == "ended" and ended.outcome == "settled"
    closed = {op.room for op in ops if isinstance(op, CloseRoom)}
    assert {
        room_channel(mid, r) for r in ("joint", "caucus_claimant", "caucus_respondent", "notes")
    } <= closed
    # Everyone connected is told first.
    assert emits(ops)[0][1] == MeetingState.EVENT
    with pytest.raises(Refused) as refused:
        await say(app, cast.claimant, mid, "还在吗", "late")
    assert refused.value.code == "not_open"
    with pytest.raises(Refused) as refused:
        await join(app, cast.claimant, mid, "late")
    assert refused.value.code == "ended"
    async with app.starlette.state.db() as db:
        actions = list(
            await db.scalars(
                select(CaseEvent.data).where(
                    CaseEvent.case_id == cast.case_id, CaseEvent.kind == "meeting"
                )
            )
        )
    assert [a["action"] for a in actions] == ["scheduled", "ended"]
    assert actions[-1]["outcome"] == "settled"


async def test_rescheduling_and_cancelling_tell_everyone(app: Any) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    state = app.starlette.state
    waiting, _ = await join(app, cast.claimant, mid, "c1")

    async def with_meeting(call: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        async with state.db() as db:
            resource = await meetings.access(db, mid)
            user = await db.get(User, cast.mediator.id)
            result = await call(db, resource.meeting, resource.case, user, *args, **kw)
        return result, committed(db)

    later = utcnow() + timedelta(days=2)
    await with_meeting(
        meetings.reschedule_meeting, starts_at=later, duration_minutes=90, mode="voice"
    )
    with pytest.raises(DomainError):
        await with_meeting(meetings.cancel_meeting, "  ")
    cancelled, ops = await with_meeting(meetings.cancel_meeting, "调解员临时出差")
    assert cancelled.status == "cancelled"
    told = [op for op in ops if isinstance(op, Emit)]
    assert [(op.room, op.event.status) for op in told] == [  # type: ignore[attr-defined]
        (seat_channel(mid, waiting.participant.id), "cancelled")
    ]
    with pytest.raises(DomainError):
        await with_meeting(
            meetings.reschedule_meeting, starts_at=later, duration_minutes=60, mode="video"
        )
    async with state.db() as db:
        titles = list(
            await db.scalars(
                select(Notification.title_msgid)
                .where(Notification.user_id == cast.rep1.id, Notification.channel == "in_app")
                .order_by(Notification.id)
            )
        )
        stored = await db.scalar(
            select(func.count()).select_from(MeetingMessage).where(MeetingMessage.meeting_id == mid)
        )
    assert [t for t in titles if "session" in t] == [
        "Mediation session scheduled",
        "Mediation session moved",
        "Mediation session cancelled",
    ]
    assert stored == 0


async def test_signals_only_reach_a_connected_peer_in_the_same_room(app: Any) -> None:
    cast = await build_cast(app)
    mid = cast.meeting_id
    await seated(app, cast, cast.claimant, cast.rep1)
    offer = {"description": {"type": "offer", "sdp": "v=0"}}

    async def signal(sender: Person, to: int, data: dict[str, Any]) -> list[Op]:
        ops, _ = await run(app, lambda db: meetings.relay_signal(db, mid, sender.id, to, data))
        return ops

    ops = await signal(cast.claimant, cast.rep1.id, offer)
    async with app.starlette.state.db() as db:
        rep_seat = await db.scalar(
            select(Participant.id).where(
                Participant.meeting_id == mid, Participant.user_id == cast.rep1.id
            )
        )
    assert emits(ops) == [(seat_channel(mid, rep_seat or 0), "meeting.signal")]
    await run(
        app,
        lambda db: meetings.move(db, mid, cast.mediator.id, "caucus_respondent", side="respondent"),
    )
    for sender, to, data, code in [
        (cast.claimant, cast.rep1.id, offer, "invalid_target"),  # another room
        (cast.claimant, cast.claimant.id, offer, "invalid_target"),  # oneself
        (cast.claimant, cast.stranger.id, offer, "invalid_target"),
        (cast.claimant, cast.mediator.id, {"sdp": "x"}, "invalid"),
        (cast.claimant, cast.mediator.id, {}, "invalid"),
        (cast.claimant, cast.mediator.id, {"candidate": "x" * 20_000}, "too_large"),
    ]:
        with pytest.raises(Refused) as refused:
            await signal(sender, to, data)
        assert refused.value.code == code
    assert await signal(cast.claimant, cast.mediator.id, {"candidate": None})
    # Text-only sessions carry no media at all.
    text_only = await make_meeting(app, await _case(app, cast), cast.mediator, mode="text")
    await join(app, cast.mediator, text_only.id, "m2")
    with pytest.raises(Refused) as refused:
        await run(
            app, lambda db: meetings.relay_signal(db, text_only.id, cast.mediator.id, 1, offer)
        )
    assert refused.value.code == "no_media"


async def _case(app: Any, cast: Cast) -> Any:
    async with app.starlette.state.db() as db:
        return await db.get(Case, cast.case_id)
