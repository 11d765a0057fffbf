"""Reminders before a session: 24 hours and 15 minutes before it starts, to everyone invited
(in the app, by email and by text, as the invitation went).

Each reminder goes out once. The session's row records it (``reminded_day_at``,
``reminded_soon_at``), and a reminder is claimed by an UPDATE that only matches while that
column is still empty (and the session still stands at the time that was read): under several
processes, on PostgreSQL the second UPDATE waits for the first transaction and then matches
nothing; on SQLite writers take turns. The notifications are written in the same transaction as
the claim, so a reminder is either claimed and queued, or neither.

A reminder is only sent if the session was planned at least that long ahead (none "in 24 hours"
for a session set this afternoon) and while it is still ahead: the 24-hour one until the
15-minute one is due, the 15-minute one until the start. Moving a session clears both records
(``reschedule_meeting``), so the new time gets its own reminders; a cancelled or ended session
gets none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from portal.audit.service import record
from portal.background import BackgroundLoop
from portal.cases.models import Case
from portal.db import session_scope, utcnow
from portal.i18n import Msg, _l
from portal.meetings.models import Meeting, MeetingStatus
from portal.meetings.service import MODES, invited_ids, local_time, meeting_path
from portal.notify.service import notify

logger = logging.getLogger("jiefen.meetings")

# Sessions that may still be joined: a scheduled one, or one the mediator has opened early.
UPCOMING = (MeetingStatus.SCHEDULED.value, MeetingStatus.OPEN.value)


@dataclass(frozen=True)
class Reminder:
    kind: str
    lead: timedelta  # due this long before the start
    until: timedelta  # and no longer once only this much is left (the next one takes over)
    column: InstrumentedAttribute[datetime | None]

    def title(self) -> Msg:
        if self.kind == "day":
            return _l("Reminder: mediation session in 24 hours")
        return _l("Reminder: mediation session in 15 minutes")


DAY = Reminder("day", timedelta(hours=24), timedelta(minutes=15), Meeting.reminded_day_at)
SOON = Reminder("soon", timedelta(minutes=15), timedelta(0), Meeting.reminded_soon_at)
REMINDERS = (SOON, DAY)  # the most urgent first


def is_due(reminder: Reminder, starts_at: datetime, planned_at: datetime, now: datetime) -> bool:
    """Whether ``reminder`` (not yet sent) is due at ``now`` for a session starting at
    ``starts_at`` whose time was set at ``planned_at``."""
    left = starts_at - now
    return reminder.until < left <= reminder.lead and starts_at - planned_at >= reminder.lead


async def _claim(
    db: AsyncSession, reminder: Reminder, meeting_id: int, seen: datetime, now: datetime
) -> bool:
    """Record that the reminder goes out now, unless it already has (or the session has moved,
    been cancelled or ended since it was read)."""
    result = await db.execute(
        update(Meeting)
        .where(
            Meeting.id == meeting_id,
            reminder.column.is_(None),
            Meeting.starts_at == seen,
            Meeting.status.in_(UPCOMING),
        )
        .values({reminder.column: now})
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


async def _remind(db: AsyncSession, reminder: Reminder, meeting_id: int) -> int:
    meeting = await db.get(Meeting, meeting_id, populate_existing=True)
    assert meeting is not None
    case = await db.get(Case, meeting.case_id)
    assert case is not None
    body = _l(
        "Case {number}: the mediation session starts on {time} ({minutes} minutes, {mode}). "
        "Open the link at that time to join.",
        number=case.number or "",
        time=local_time(meeting.starts_at),
        minutes=meeting.duration_minutes,
        mode={"msgid": MODES[meeting.mode].msgid},
    )
    recipients = await invited_ids(db, meeting.id)
    for user_id in recipients:
        await notify(db, user_id, reminder.title(), body, link=meeting_path(meeting.id))
    record(
        db,
        None,
        "meeting.remind",
        "meeting",
        meeting.id,
        reminder=reminder.kind,
        starts_at=meeting.starts_at.isoformat(),
        recipients=len(recipients),
    )
    return len(recipients)


@dataclass
class ReminderReport:
    sent: int = 0  # reminders (one per session and kind)
    notified: int = 0  # people told
    more: bool = False  # stopped at the limit: call again


async def send_due_reminders(
    db: AsyncSession, now: datetime, *, limit: int = 100
) -> ReminderReport:
    """Send every reminder due at ``now`` (up to ``limit``), in one transaction, and commit.

    Each goes to everyone invited to the session (in the app, by email, by text); each is
    claimed first, so however many processes run this at once, it is sent once.
    """
    report = ReminderReport()
    for reminder in REMINDERS:
        # Every session in the reminder's window whose reminder is not yet out (a day's
        # sessions at most); whether it was planned long enough ahead is decided below.
        candidates = await db.execute(
            select(Meeting.id, Meeting.starts_at, Meeting.planned_at)
            .where(
                Meeting.status.in_(UPCOMING),
                reminder.column.is_(None),
                Meeting.starts_at > now + reminder.until,
                Meeting.starts_at <= now + reminder.lead,
            )
            .order_by(Meeting.starts_at, Meeting.id)
        )
        for meeting_id, starts_at, planned_at in candidates.all():
            if not is_due(reminder, starts_at, planned_at, now):
                continue
            if report.sent >= limit:
                report.more = True
                break
            if await _claim(db, reminder, meeting_id, starts_at, now):
                report.notified += await _remind(db, reminder, meeting_id)
                report.sent += 1
    await db.commit()
    return report


class ReminderLoop(BackgroundLoop):
    """Runs ``send_due_reminders`` every ``interval`` seconds; ``on_sent`` (the outbox's
    ``wake``) is called after a round that queued reminders."""

    name = "jiefen-reminders"
    log = logger

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval: float = 30.0,
        limit: int = 100,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.limit = limit
        self.on_sent = on_sent

    async def run_once(self) -> bool:
        async with session_scope(self.sessionmaker) as db:
            report = await send_due_reminders(db, utcnow(), limit=self.limit)
        if report.sent:
            logger.info("Reminders: %s sent to %s people", report.sent, report.notified)
            if self.on_sent is not None:
                self.on_sent()
        return report.more
