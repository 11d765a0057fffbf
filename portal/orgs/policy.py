"""Who may see and change committees, firms and mediator profiles."""

from __future__ import annotations

from portal.orgs.models import Committee, Firm, MediatorProfile
from portal.policy import (
    ACE,
    ACL,
    ALLOW,
    AclFunction,
    Collection,
    Role,
    committee,
    firm,
    role,
    user,
)

COMMITTEES = Collection("committees")
FIRMS = Collection("firms")
MEDIATORS = Collection("mediators")

PLATFORM_ADMIN = role(Role.PLATFORM_ADMIN)
COMMITTEE_ADMIN = role(Role.COMMITTEE_ADMIN)


def committees_acl(_: Collection) -> ACL:
    return [
        (ALLOW, PLATFORM_ADMIN, ("view", "create")),
        (ALLOW, COMMITTEE_ADMIN, "view"),
    ]


def committee_acl(obj: Committee) -> ACL:
    return [
        (ALLOW, PLATFORM_ADMIN, ("view", "edit", "invite_staff")),
        (ALLOW, committee(obj.id, Role.COMMITTEE_ADMIN), ("view", "edit", "invite_staff")),
    ]


def firms_acl(_: Collection) -> ACL:
    return [
        (ALLOW, PLATFORM_ADMIN, ("view", "create")),
        (ALLOW, COMMITTEE_ADMIN, ("view", "create")),
    ]


def firm_acl(obj: Firm) -> ACL:
    return [
        (ALLOW, PLATFORM_ADMIN, ("view", "edit", "invite_rep")),
        (ALLOW, COMMITTEE_ADMIN, ("view", "edit", "invite_rep")),
        (ALLOW, firm(obj.id, Role.FIRM_REP), "view"),
    ]


def mediators_acl(_: Collection) -> ACL:
    return [(ALLOW, PLATFORM_ADMIN, "view"), (ALLOW, COMMITTEE_ADMIN, "view")]


def mediator_acl(obj: MediatorProfile) -> ACL:
    acl: list[ACE] = [(ALLOW, PLATFORM_ADMIN, ("view", "edit"))]
    if obj.user.committee_id is not None:
        acl.append(
            (ALLOW, committee(obj.user.committee_id, Role.COMMITTEE_ADMIN), ("view", "edit"))
        )
    acl.append((ALLOW, user(obj.user_id), ("view", "declare_ties")))
    return acl


RULES: dict[type | Collection, AclFunction] = {
    COMMITTEES: committees_acl,
    Committee: committee_acl,
    FIRMS: firms_acl,
    Firm: firm_acl,
    MEDIATORS: mediators_acl,
    MediatorProfile: mediator_acl,
}
