"""Who may see, join and run a case's live sessions.

The case's mediator schedules and runs them ("manage": admit, turn away, remove, move, lock,
end, reschedule, cancel). The claimant who filed, the respondent firm's representatives and the
observers the mediator invited may see and join them. Joining is not entering: everyone but the
mediator waits until the mediator admits them (portal.meetings.service).

Minutes (portal.meetings.minutes): the session's mediator writes them ("write_minutes"); the
claimant and the firm's representatives confirm or decline them ("confirm_minutes"); whoever
may see the session reads them once they are put to the parties.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.cases.models import Case
from portal.meetings.models import Meeting
from portal.policy import ACE, ACL, ALLOW, AclFunction, Collection, Role, firm, user


@dataclass(frozen=True)
class CaseMeetings:
    """The sessions of one case (the ACL needs the case)."""

    case: Case


@dataclass(frozen=True)
class MeetingAccess:
    """A session with its case and the observers invited to it."""

    meeting: Meeting
    case: Case
    observer_ids: frozenset[int] = frozenset()


def case_meetings_acl(resource: CaseMeetings) -> ACL:
    case = resource.case
    if case.mediator_id is None:
        return []
    return [(ALLOW, user(case.mediator_id), "schedule")]


def meeting_acl(resource: MeetingAccess) -> ACL:
    meeting, case = resource.meeting, resource.case
    acl: list[ACE] = []
    # The mediator who scheduled it, while still the case's mediator.
    if case.mediator_id is not None and case.mediator_id == meeting.mediator_id:
        acl.append((ALLOW, user(meeting.mediator_id), ("view", "join", "manage", "write_minutes")))
    acl.append((ALLOW, user(case.filer_id), ("view", "join", "confirm_minutes")))
    if case.respondent_firm_id is not None:
        acl.append(
            (
                ALLOW,
                firm(case.respondent_firm_id, Role.FIRM_REP),
                ("view", "join", "confirm_minutes"),
            )
        )
    acl.extend((ALLOW, user(observer), ("view", "join")) for observer in resource.observer_ids)
    return acl


RULES: dict[type | Collection, AclFunction] = {
    CaseMeetings: case_meetings_acl,
    MeetingAccess: meeting_acl,
}
