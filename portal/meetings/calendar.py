"""Calendar entries for sessions: an iCalendar (RFC 5545, iTIP RFC 5546) event attached to the
email of each invitation, move and cancellation, so the session lands in the recipient's own
calendar and moves or disappears with it.

Every email about one session carries the same UID (``meeting-<id>@<host>``), so calendars
update their entry rather than add another. SEQUENCE counts the moves (and one more for the
cancellation); METHOD is REQUEST while the session stands and CANCEL once it is cancelled. The
file is made when the email is sent (the outbox worker asks :data:`ATTACHMENTS`' builder), from
the session as it is then: an invitation sent late, after a move, already shows the new time.
"""

from __future__ import annotations

import gettext
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.cases.models import Case
from portal.i18n import _l
from portal.meetings.models import Meeting, MeetingStatus, Participant, Side
from portal.meetings.service import CALENDAR_KIND, MODES, meeting_path
from portal.notify.attachments import Attachment, AttachmentBuilder, AttachmentRequest
from portal.orgs.models import Committee

if TYPE_CHECKING:
    from icalendar import Calendar, vCalAddress

PRODID = "-//Jiefen//Mediation sessions//EN"
FILENAME = "invite.ics"
ALARM_BEFORE = timedelta(minutes=15)

# The iCalendar ROLE of each side (RFC 5545 3.2.16).
ROLES = {
    Side.MEDIATOR: "CHAIR",
    Side.CLAIMANT: "REQ-PARTICIPANT",
    Side.RESPONDENT: "REQ-PARTICIPANT",
    Side.OBSERVER: "NON-PARTICIPANT",
}


def uid(meeting_id: int, base_url: str) -> str:
    """The session's calendar UID: the same in every email about it."""
    host = urlsplit(base_url).hostname or "localhost"
    return f"meeting-{meeting_id}@{host}"


def sequence(meeting: Meeting) -> int:
    """SEQUENCE: the number of moves, and one more once cancelled."""
    cancelled = meeting.status == MeetingStatus.CANCELLED
    return meeting.calendar_sequence + (1 if cancelled else 0)


def join_link(meeting_id: int, base_url: str) -> str:
    return base_url.rstrip("/") + meeting_path(meeting_id)


def _address(name: str, email: str, **params: str) -> vCalAddress:
    from icalendar import vCalAddress, vText

    address = vCalAddress(f"mailto:{email}")
    if name:
        address.params["CN"] = vText(name)
    for key, value in params.items():
        address.params[key] = value
    return address


def session_calendar(
    meeting: Meeting,
    case: Case,
    *,
    translations: gettext.NullTranslations,
    base_url: str,
    organizer_name: str,
    organizer_email: str,
    attendee_name: str,
    attendee_email: str,
    side: str | None,
    now: datetime,
) -> Calendar:
    """The session's calendar entry as one recipient gets it (in their language)."""
    cancelled = meeting.status == MeetingStatus.CANCELLED
    link = join_link(meeting.id, base_url)
    number = case.number or ""
    summary = _l("Mediation session, case {number}", number=number).render(translations)
    if cancelled:
        text = _l(
            "Case {number}: this mediation session is cancelled. Reason: {reason}",
            number=number,
            reason=meeting.cancel_reason,
        )
    else:
        text = _l(
            "Case {number}: a mediation session ({minutes} minutes, {mode}). "
            "At that time, join it here: {link}",
            number=number,
            minutes=meeting.duration_minutes,
            mode={"msgid": MODES[meeting.mode].msgid},
            link=link,
        )
    description = text.render(translations)

    # Imported here: icalendar (with dateutil) costs 8 MB and 0.2 s in every process.
    from icalendar import Alarm, Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "CANCEL" if cancelled else "REQUEST")

    event = Event()
    event.add("uid", uid(meeting.id, base_url))
    event.add("sequence", sequence(meeting))
    event.add("dtstamp", now)
    event.add("dtstart", meeting.starts_at)
    event.add("dtend", meeting.starts_at + timedelta(minutes=meeting.duration_minutes))
    event.add("summary", summary)
    event.add("description", description)
    event.add("location", link)
    event.add("url", link)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    event.add("transp", "TRANSPARENT" if cancelled else "OPAQUE")
    event.add("organizer", _address(organizer_name, organizer_email))
    role = ROLES.get(Side(side)) if side in set(Side) else None
    event.add(
        "attendee",
        _address(
            attendee_name,
            attendee_email,
            CUTYPE="INDIVIDUAL",
            ROLE=role or "REQ-PARTICIPANT",
            PARTSTAT="NEEDS-ACTION",
            RSVP="FALSE",
        ),
    )
    if not cancelled:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", summary)
        alarm.add("trigger", -ALARM_BEFORE)
        event.add_component(alarm)
    calendar.add_component(event)
    return calendar


async def build_invitation(db: AsyncSession, request: AttachmentRequest) -> Attachment | None:
    """The attachment builder for ``meeting:<id>``: the session's calendar entry for the
    email's recipient (None if the session is gone)."""
    if not request.key.isdigit():
        return None
    meeting = await db.get(Meeting, int(request.key), populate_existing=True)
    if meeting is None:
        return None
    case = await db.get(Case, meeting.case_id)
    if case is None:
        return None
    committee = await db.get(Committee, case.committee_id)
    side = await db.scalar(
        select(Participant.side).where(
            Participant.meeting_id == meeting.id, Participant.user_id == request.user.id
        )
    )
    translations = request.translations
    if committee is None:
        organizer_name = _l("Jiefen online mediation").render(translations)
    elif request.user.locale == "en" and committee.name_en:
        organizer_name = committee.name_en
    else:
        organizer_name = committee.name
    host = urlsplit(request.base_url).hostname or "localhost"
    organizer_email = parseaddr(request.sender)[1] or f"noreply@{host}"
    calendar = session_calendar(
        meeting,
        case,
        translations=translations,
        base_url=request.base_url,
        organizer_name=organizer_name,
        organizer_email=organizer_email,
        attendee_name=request.user.display_name,
        attendee_email=request.address,
        side=side,
        now=request.now,
    )
    method = "CANCEL" if meeting.status == MeetingStatus.CANCELLED else "REQUEST"
    return Attachment(calendar.to_ical(), "text/calendar", FILENAME, {"method": method})


ATTACHMENTS: dict[str, AttachmentBuilder] = {CALENDAR_KIND: build_invitation}
