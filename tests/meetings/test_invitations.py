"""Invitations to a session, on both databases: the calendar entry (.ics) that the emails of an
invitation, a move and a cancellation carry, received by a real SMTP server on loopback and
parsed back; and the reminders 24 hours and 15 minutes before, driven by an explicit clock,
sent once each however many loops race for them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from icalendar import Calendar, Event
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.audit.models import AuditEvent
from portal.cases.models import Case
from portal.db import utcnow
from portal.meetings import service as meetings
from portal.meetings.models import Meeting
from portal.meetings.reminders import ReminderLoop, ReminderReport, send_due_reminders
from portal.notify.delivery import DeliveryReport, LogSmsProvider, deliver_pending
from portal.notify.models import Notification
from portal.policy import Role
from portal.settings import Settings, SmtpSettings
from tests.conftest import free_port, make_settings
from tests.factories import (
    Person,
    make_case,
    make_committee,
    make_firm,
    make_user,
    verify_phone,
)
from tests.notify.test_delivery import Mailbox, SmtpServer, eventually, text_of

_phones = itertools.count(1)
DAY_TITLE = "Reminder: mediation session in 24 hours"
SOON_TITLE = "Reminder: mediation session in 15 minutes"


# -- a real SMTP server, which the app's own outbox worker also sends to --------------------


@pytest.fixture
def mail() -> Iterator[SmtpServer]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="Jiefen <noreply@jiefen.test>")
    yield SmtpServer(settings, box)
    controller.stop()


@pytest.fixture
def settings(db_url: str, tmp_path: Path, mail: SmtpServer) -> Settings:
    return make_settings(db_url, tmp_path, smtp=mail.settings)


# -- the people -----------------------------------------------------------------------------


@dataclass
class Party:
    mediator: Person
    claimant: Person  # email and phone, Chinese
    rep: Person  # the firm's representative, English
    observer: Person  # another mediator of the committee, Chinese
    case_id: int
    number: str
    committee_name: str
    committee_name_en: str


async def party(app: Any) -> Party:
    name_en = "Pudong Financial Mediation Committee"
    committee = await make_committee(app, name_en=name_en)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="王调解员")
    observer = await make_user(
        app, Role.MEDIATOR, committee=committee, name="李观察员", email="li.observer@example.com"
    )
    firm = await make_firm(app)
    rep = await make_user(
        app, Role.FIRM_REP, firm=firm, name="Jane Rep", email="jane.rep@example.com", locale="en"
    )
    claimant = await make_user(
        app,
        Role.CONSUMER,
        phone=f"137{next(_phones):08d}",
        email="zhang.san@example.com",
        name="张三",
    )
    await verify_phone(app, claimant)
    case = await make_case(app, claimant, firm, status="assigned", mediator_id=mediator.id)
    # The case's own emails (filed, accepted, assigned) are not what these tests are about.
    async with app.starlette.state.db() as db:
        await db.execute(
            update(Notification).where(Notification.status == "pending").values(status="sent")
        )
        await db.commit()
    return Party(
        mediator=mediator,
        claimant=claimant,
        rep=rep,
        observer=observer,
        case_id=case.id,
        number=case.number,
        committee_name=committee.name,
        committee_name_en=name_en,
    )


def later(**delta: float) -> datetime:
    """A time ``delta`` from now, to the minute (as the scheduling form gives it)."""
    return (utcnow() + timedelta(**delta)).replace(second=0, microsecond=0)


@asynccontextmanager
async def as_mediator(app: Any, who: Party) -> AsyncIterator[tuple[AsyncSession, User, Case]]:
    async with app.starlette.state.db() as db:
        user = await db.get(User, who.mediator.id)
        case = await db.get(Case, who.case_id)
        assert user is not None and case is not None
        yield db, user, case


async def schedule(app: Any, who: Party, starts_at: datetime, mode: str = "video") -> int:
    async with as_mediator(app, who) as (db, user, case):
        meeting = await meetings.schedule_meeting(
            db,
            case,
            user,
            starts_at=starts_at,
            duration_minutes=60,
            mode=mode,
            observer_ids=[who.observer.id],
        )
    return meeting.id


async def reschedule(app: Any, who: Party, meeting_id: int, starts_at: datetime) -> None:
    async with as_mediator(app, who) as (db, user, case):
        meeting = await meetings.get_meeting(db, meeting_id)
        await meetings.reschedule_meeting(
            db, meeting, case, user, starts_at=starts_at, duration_minutes=90, mode="voice"
        )


async def cancel(app: Any, who: Party, meeting_id: int) -> None:
    async with as_mediator(app, who) as (db, user, case):
        meeting = await meetings.get_meeting(db, meeting_id)
        await meetings.cancel_meeting(db, meeting, case, user, "调解员临时有事; 改期再议")


async def deliver(app: Any, mail: SmtpServer) -> DeliveryReport:
    state = app.starlette.state
    return await deliver_pending(
        state.db,
        vault=state.vault,
        catalogues=state.catalogues,
        smtp=mail.settings,
        sms=LogSmsProvider(),
        base_url=state.settings.base_url,
        attachments=state.attachments,
    )


def about_sessions(mail: SmtpServer) -> list[EmailMessage]:
    return [m for m in mail.box.messages if "/meetings/" in text_of(m)]


async def inbox(app: Any, mail: SmtpServer, count: int) -> dict[str, list[EmailMessage]]:
    """Deliver the outbox and wait for ``count`` emails about sessions in all (the app's own
    worker may send some of them); return them by recipient, oldest first."""
    await deliver(app, mail)

    async def arrived() -> bool:
        return len(about_sessions(mail)) >= count

    await eventually(arrived)
    messages = about_sessions(mail)
    assert len(messages) == count, [m["Subject"] for m in messages]
    found: dict[str, list[EmailMessage]] = {}
    for message in messages:
        found.setdefault(str(message["To"]), []).append(message)
    return found


def calendar_of(message: EmailMessage, method: str) -> tuple[Calendar, Event]:
    """The email's one .ics attachment, parsed back, with its one event."""
    parts = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1, message
    part = parts[0]
    assert isinstance(part, EmailMessage)
    assert part.get_filename() == "invite.ics"
    assert part.get_param("method") == method
    assert part.get_param("name") == "invite.ics"
    calendar = Calendar.from_ical(part.get_content())
    assert str(calendar["METHOD"]) == method
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, Event)
    return calendar, event


def when(event: Event, name: str) -> datetime:
    value = event.decoded(name)
    assert isinstance(value, datetime) and value.tzinfo is not None
    return value.astimezone(UTC)


# -- the calendar entry ---------------------------------------------------------------------


async def test_the_invitation_email_carries_the_session_as_a_calendar_entry(
    app: Any, mail: SmtpServer
) -> None:
    who = await party(app)
    starts_at = later(days=3)
    meeting_id = await schedule(app, who, starts_at)
    link = f"http://testserver/meetings/{meeting_id}"

    # Only the email rows name the attachment; the mediator, who scheduled it, is not told.
    async with app.starlette.state.db() as db:
        rows = list(
            await db.execute(
                select(Notification.user_id, Notification.channel, Notification.attachment).where(
                    Notification.link == f"/meetings/{meeting_id}"
                )
            )
        )
    assert {(u, a) for u, c, a in rows if c == "email"} == {
        (p.id, f"meeting:{meeting_id}") for p in (who.claimant, who.rep, who.observer)
    }
    assert {a for _, c, a in rows if c != "email"} == {None}
    assert who.mediator.id not in {u for u, _, _ in rows}

    mails = await inbox(app, mail, 3)
    assert sorted(mails) == [
        "jane.rep@example.com",
        "li.observer@example.com",
        "zhang.san@example.com",
    ]
    uid = f"meeting-{meeting_id}@testserver"

    [english] = mails["jane.rep@example.com"]
    assert english.get_content_type() == "multipart/mixed"
    assert link in text_of(english)  # the text says it all too
    calendar, event = calendar_of(english, "REQUEST")
    assert str(calendar["VERSION"]) == "2.0" and "Jiefen" in str(calendar["PRODID"])
    assert str(event["UID"]) == uid
    assert int(event["SEQUENCE"]) == 0
    assert str(event["STATUS"]) == "CONFIRMED"
    assert when(event, "DTSTART") == starts_at
    assert when(event, "DTEND") == starts_at + timedelta(minutes=60)
    assert event["DTSTART"].to_ical().endswith(b"Z")  # in UTC
    assert str(event["SUMMARY"]) == f"Mediation session, case {who.number}"
    description = str(event["DESCRIPTION"])
    assert who.number in description and link in description and "Video" in description
    assert str(event["URL"]) == link
    assert str(event["LOCATION"]) == link
    organizer = event["ORGANIZER"]
    assert str(organizer) == "mailto:noreply@jiefen.test"
    assert organizer.params["CN"] == who.committee_name_en
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:jane.rep@example.com"
    assert attendee.params["CN"] == "Jane Rep" and attendee.params["ROLE"] == "REQ-PARTICIPANT"
    [alarm] = event.walk("VALARM")
    assert str(alarm["ACTION"]) == "DISPLAY"
    assert alarm.decoded("TRIGGER") == timedelta(minutes=-15)

    # In Chinese for the Chinese: the mode, the committee's name; an observer only observes.
    zh = app.starlette.state.catalogues["zh_CN"]
    [chinese] = mails["li.observer@example.com"]
    _, event = calendar_of(chinese, "REQUEST")
    assert str(event["UID"]) == uid
    video = zh.gettext("Video")
    assert video != "Video" and video in str(event["DESCRIPTION"])
    assert event["ORGANIZER"].params["CN"] == who.committee_name
    assert event["ATTENDEE"].params["ROLE"] == "NON-PARTICIPANT"
    [claimant] = mails["zhang.san@example.com"]
    _, event = calendar_of(claimant, "REQUEST")
    assert str(event["ATTENDEE"]) == "mailto:zhang.san@example.com"


async def test_a_move_updates_the_same_entry_and_a_cancellation_removes_it(
    app: Any, mail: SmtpServer
) -> None:
    who = await party(app)
    meeting_id = await schedule(app, who, later(days=3))
    await inbox(app, mail, 3)
    uid = f"meeting-{meeting_id}@testserver"

    moved_to = later(days=4, hours=2)
    await reschedule(app, who, meeting_id, moved_to)
    mails = await inbox(app, mail, 6)
    moved = mails["jane.rep@example.com"][-1]
    assert "moved" in str(moved["Subject"])
    _, event = calendar_of(moved, "REQUEST")
    assert str(event["UID"]) == uid and int(event["SEQUENCE"]) == 1
    assert when(event, "DTSTART") == moved_to
    assert when(event, "DTEND") == moved_to + timedelta(minutes=90)
    assert "Voice only" in str(event["DESCRIPTION"])

    again = later(days=5)
    await reschedule(app, who, meeting_id, again)
    mails = await inbox(app, mail, 9)
    _, event = calendar_of(mails["jane.rep@example.com"][-1], "REQUEST")
    assert str(event["UID"]) == uid and int(event["SEQUENCE"]) == 2
    assert when(event, "DTSTART") == again

    await cancel(app, who, meeting_id)
    mails = await inbox(app, mail, 12)
    for address in mails:
        cancelled = mails[address][-1]
        assert "cancelled" in str(cancelled["Subject"]) or "取消" in str(cancelled["Subject"])
        _, event = calendar_of(cancelled, "CANCEL")
        assert str(event["UID"]) == uid
        assert int(event["SEQUENCE"]) == 3  # above every REQUEST's
        assert str(event["STATUS"]) == "CANCELLED"
        assert when(event, "DTSTART") == again
        assert "改期再议" in str(event["DESCRIPTION"])
        assert not event.walk("VALARM")


async def test_an_email_sent_late_carries_the_session_as_it_is_then(
    app: Any, mail: SmtpServer
) -> None:
    """The file is made when the email is sent: an invitation still in the outbox when the
    session moves (SMTP down, say) goes out with the new time."""
    who = await party(app)
    meeting_id = await schedule(app, who, later(days=3))
    moved_to = later(days=6)
    await reschedule(app, who, meeting_id, moved_to)
    mails = await inbox(app, mail, 6)
    for message in mails["jane.rep@example.com"]:
        _, event = calendar_of(message, "REQUEST")
        assert int(event["SEQUENCE"]) == 1 and when(event, "DTSTART") == moved_to


# -- reminders ------------------------------------------------------------------------------


async def remind(app: Any, now: datetime) -> ReminderReport:
    async with app.starlette.state.db() as db:
        return await send_due_reminders(db, now)


async def reminders_sent(app: Any, meeting_id: int) -> list[tuple[int, str, str]]:
    """(user, channel, title) of every reminder notification of the session."""
    async with app.starlette.state.db() as db:
        rows = await db.execute(
            select(Notification.user_id, Notification.channel, Notification.title_msgid)
            .where(
                Notification.link == f"/meetings/{meeting_id}",
                Notification.title_msgid.in_([DAY_TITLE, SOON_TITLE]),
            )
            .order_by(Notification.id)
        )
        return [(u, c, t) for u, c, t in rows]


async def load(app: Any, meeting_id: int) -> Meeting:
    async with app.starlette.state.db() as db:
        meeting = await db.get(Meeting, meeting_id)
    assert meeting is not None
    return meeting


def everyone(who: Party, title: str) -> list[tuple[int, str, str]]:
    """One reminder of ``title`` to every participant, on each channel they have."""
    expected = [(who.mediator.id, "in_app", title), (who.mediator.id, "email", title)]
    expected += [(who.claimant.id, c, title) for c in ("in_app", "email", "sms")]
    expected += [(p.id, c, title) for p in (who.rep, who.observer) for c in ("in_app", "email")]
    return sorted(expected)


async def test_reminders_go_out_a_day_and_a_quarter_hour_before_once_each(app: Any) -> None:
    who = await party(app)
    starts_at = later(days=2)
    meeting_id = await schedule(app, who, starts_at)
    day, soon = starts_at - timedelta(hours=24), starts_at - timedelta(minutes=15)

    assert await remind(app, day - timedelta(seconds=1)) == ReminderReport()
    report = await remind(app, day)
    assert (report.sent, report.notified) == (1, 4)
    assert sorted(await reminders_sent(app, meeting_id)) == everyone(who, DAY_TITLE)
    assert (await load(app, meeting_id)).reminded_day_at == day
    for moment in (day, day + timedelta(hours=6), soon - timedelta(seconds=1)):
        assert await remind(app, moment) == ReminderReport()

    assert (await remind(app, soon)).sent == 1
    sent = await reminders_sent(app, meeting_id)
    assert sorted(sent) == sorted(everyone(who, DAY_TITLE) + everyone(who, SOON_TITLE))
    assert (await load(app, meeting_id)).reminded_soon_at == soon
    for moment in (soon, starts_at - timedelta(minutes=1), starts_at, starts_at + timedelta(1)):
        assert await remind(app, moment) == ReminderReport()
    assert len(await reminders_sent(app, meeting_id)) == len(sent)

    async with app.starlette.state.db() as db:
        audit = list(
            await db.scalars(
                select(AuditEvent).where(AuditEvent.action == "meeting.remind").order_by("id")
            )
        )
    assert [(a.object_id, a.detail["reminder"], a.actor_id) for a in audit] == [
        (str(meeting_id), "day", None),
        (str(meeting_id), "soon", None),
    ]


async def test_the_reminder_email_and_text_say_when_and_link_to_the_session(
    app: Any, mail: SmtpServer
) -> None:
    who = await party(app)
    starts_at = later(days=2)
    meeting_id = await schedule(app, who, starts_at)
    await inbox(app, mail, 3)
    await remind(app, starts_at - timedelta(hours=24))
    mails = await inbox(app, mail, 7)  # the mediator is reminded too
    [reminder] = mails["jane.rep@example.com"][1:]
    assert reminder["Subject"] == f"[Jiefen] {DAY_TITLE}"
    body = text_of(reminder)
    assert who.number in body and meetings.local_time(starts_at) in body
    assert f"http://testserver/meetings/{meeting_id}" in body
    assert not list(reminder.iter_attachments())


async def test_no_reminder_that_would_come_with_or_before_the_invitation(app: Any) -> None:
    who = await party(app)
    # Set for this afternoon: no "in 24 hours", but the quarter-hour one.
    afternoon = later(hours=3)
    first = await schedule(app, who, afternoon)
    # Set for ten minutes from now: nothing at all.
    imminent = later(minutes=10)
    second = await schedule(app, who, imminent)
    now = utcnow()
    for moment in (now, afternoon - timedelta(hours=1), imminent - timedelta(minutes=9)):
        assert await remind(app, moment) == ReminderReport()
    assert (await remind(app, afternoon - timedelta(minutes=15))).sent == 1
    assert sorted(await reminders_sent(app, first)) == everyone(who, SOON_TITLE)
    assert await reminders_sent(app, second) == []
    assert (await load(app, first)).reminded_day_at is None


async def test_a_cancelled_or_ended_session_gets_no_reminder_an_open_one_does(app: Any) -> None:
    who = await party(app)
    starts_at = later(days=2)
    cancelled = await schedule(app, who, starts_at)
    ended = await schedule(app, who, starts_at)
    opened = await schedule(app, who, starts_at)
    await cancel(app, who, cancelled)
    state = app.starlette.state
    for meeting_id in (ended, opened):  # the mediator opens them early
        async with state.db() as db:
            user = await db.get(User, who.mediator.id)
            assert user is not None
            resource = await meetings.access(db, meeting_id)
            await meetings.join_meeting(db, resource, user, f"sid-{meeting_id}")
    async with state.db() as db:
        await meetings.end_meeting(db, ended, who.mediator.id, "adjourned")

    assert (await remind(app, starts_at - timedelta(hours=24))).sent == 1
    assert (await remind(app, starts_at - timedelta(minutes=15))).sent == 1
    assert await reminders_sent(app, cancelled) == []
    assert await reminders_sent(app, ended) == []
    assert len(await reminders_sent(app, opened)) == 2 * len(everyone(who, SOON_TITLE))


async def test_a_moved_session_is_reminded_again_for_its_new_time(app: Any) -> None:
    who = await party(app)
    starts_at = later(days=2)
    meeting_id = await schedule(app, who, starts_at)
    assert (await remind(app, starts_at - timedelta(hours=24))).sent == 1

    moved_to = starts_at + timedelta(days=1)
    await reschedule(app, who, meeting_id, moved_to)
    meeting = await load(app, meeting_id)
    assert meeting.reminded_day_at is None and meeting.reminded_soon_at is None
    assert meeting.calendar_sequence == 1
    # The old time passes unremarked; the new one gets both reminders.
    assert await remind(app, starts_at - timedelta(minutes=15)) == ReminderReport()
    assert (await remind(app, moved_to - timedelta(hours=24))).sent == 1
    assert (await remind(app, moved_to - timedelta(minutes=15))).sent == 1
    sent = await reminders_sent(app, meeting_id)
    titles = [t for u, c, t in sent if u == who.rep.id and c == "in_app"]
    assert titles == [DAY_TITLE, DAY_TITLE, SOON_TITLE]

    # Moved to within the day: only the quarter-hour reminder is left to come.
    soon_after = later(hours=5)
    await reschedule(app, who, meeting_id, soon_after)
    assert await remind(app, utcnow()) == ReminderReport()
    assert (await remind(app, soon_after - timedelta(minutes=15))).sent == 1


async def test_racing_transactions_send_each_reminder_once(app: Any) -> None:
    who = await party(app)
    starts_at = later(days=2)
    ids = [await schedule(app, who, starts_at) for _ in range(3)]
    for now in (starts_at - timedelta(hours=24), starts_at - timedelta(minutes=15)):
        reports = await asyncio.gather(*(remind(app, now) for _ in range(4)))
        assert sum(r.sent for r in reports) == 3, reports
    for meeting_id in ids:
        sent = await reminders_sent(app, meeting_id)
        assert sorted(sent) == sorted(everyone(who, DAY_TITLE) + everyone(who, SOON_TITLE))
    async with app.starlette.state.db() as db:
        audits = await db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "meeting.remind")
        )
    assert audits == 6


async def test_racing_loops_send_a_due_reminder_once_and_wake_the_outbox(app: Any) -> None:
    who = await party(app)
    meeting_id = await schedule(app, who, later(days=2))
    # Make the quarter-hour reminder due now (as if planned long ago for ten minutes' time).
    state = app.starlette.state
    async with state.db() as db:
        await db.execute(
            update(Meeting)
            .where(Meeting.id == meeting_id)
            .values(starts_at=utcnow() + timedelta(minutes=10), planned_at=utcnow() - timedelta(1))
        )
        await db.commit()
    woken: list[int] = []
    loops = [
        ReminderLoop(state.db, interval=3600, on_sent=lambda n=n: woken.append(n)) for n in range(3)
    ]
    for loop in loops:
        loop.start()
    try:

        async def reminded() -> bool:
            return (await load(app, meeting_id)).reminded_soon_at is not None

        await eventually(reminded)
        await asyncio.sleep(0.2)  # let the others finish their round
    finally:
        for loop in loops:
            await loop.stop()
    assert len(woken) == 1
    assert sorted(await reminders_sent(app, meeting_id)) == everyone(who, SOON_TITLE)
