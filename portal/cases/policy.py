"""Who may see and act on a case. Transitions are further limited by cases.lifecycle."""

from __future__ import annotations

from portal.cases.models import Case, ImportBatch
from portal.policy import (
    ACE,
    ACL,
    ALLOW,
    AUTHENTICATED,
    AclFunction,
    Collection,
    Role,
    committee,
    firm,
    role,
    user,
)

CASES = Collection("cases")
CALENDAR = Collection("calendar")
NOTIFICATIONS = Collection("notifications")
IMPORTS = Collection("imports")


def cases_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.CONSUMER), ("list", "file")),
        (ALLOW, role(Role.FIRM_REP), ("list", "file")),
        # The export holds the same cases as the list (its scope), and only the list's columns.
        (ALLOW, AUTHENTICATED, ("list", "export")),
        # Batch actions on the queues; each case is still checked for the action itself.
        (ALLOW, role(Role.COMMITTEE_ADMIN), "batch"),
        (ALLOW, role(Role.PLATFORM_ADMIN), "batch"),
        # A mediator's own cases: messages, status changes and sessions in a row.
        (ALLOW, role(Role.MEDIATOR), "batch"),
    ]


def case_acl(case: Case) -> ACL:
    filer = user(case.filer_id)
    if case.status == "draft":
        return [(ALLOW, filer, ("view", "edit", "upload", "view_identity"))]
    acl: list[ACE] = [
        (ALLOW, filer, ("view", "message", "upload", "recuse", "view_identity")),
        (
            ALLOW,
            committee(case.committee_id, Role.COMMITTEE_ADMIN),
            ("view", "review", "assign", "message", "upload", "view_identity", "likeness"),
        ),
        # "likeness": the template-complaint panel and side-by-side view (staff only).
        (ALLOW, role(Role.PLATFORM_ADMIN), ("view", "likeness")),
    ]
    if case.mediator_id is not None:
        acl.append(
            (
                ALLOW,
                user(case.mediator_id),
                ("view", "message", "upload", "view_identity", "likeness"),
            )
        )
    if case.respondent_firm_id is not None:
        acl.append(
            (
                ALLOW,
                firm(case.respondent_firm_id, Role.FIRM_REP),
                ("view", "respond", "message", "upload", "recuse"),
            )
        )
    return acl


def imports_acl(_: Collection) -> ACL:
    """Firms import their own complaints; committees import theirs and courts' referrals."""
    return [
        (ALLOW, role(Role.FIRM_REP), "import"),
        (ALLOW, role(Role.COMMITTEE_ADMIN), "import"),
    ]


def import_batch_acl(batch: ImportBatch) -> ACL:
    """A batch (its file's rows, its report) is seen and imported by its own firm or committee."""
    if batch.firm_id is not None:
        return [(ALLOW, firm(batch.firm_id, Role.FIRM_REP), ("view", "import"))]
    if batch.committee_id is not None:
        return [(ALLOW, committee(batch.committee_id, Role.COMMITTEE_ADMIN), ("view", "import"))]
    return []


def calendar_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.PLATFORM_ADMIN), ("view", "edit")),
        (ALLOW, role(Role.COMMITTEE_ADMIN), ("view", "edit")),
    ]


def notifications_acl(_: Collection) -> ACL:
    return [(ALLOW, AUTHENTICATED, "view")]


RULES: dict[type | Collection, AclFunction] = {
    CASES: cases_acl,
    Case: case_acl,
    CALENDAR: calendar_acl,
    NOTIFICATIONS: notifications_acl,
    IMPORTS: imports_acl,
    ImportBatch: import_batch_acl,
}
