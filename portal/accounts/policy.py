"""Who may manage accounts and invitations."""

from __future__ import annotations

from portal.accounts.models import Invitation, User
from portal.policy import (
    ACE,
    ACL,
    ALLOW,
    AUTHENTICATED,
    AclFunction,
    Collection,
    Role,
    committee,
    role,
    user,
)

ACCOUNT = Collection("account")
INVITATIONS = Collection("invitations")
USERS = Collection("users")

PLATFORM_ADMIN = role(Role.PLATFORM_ADMIN)


def account_acl(_: Collection) -> ACL:
    """One's own account: any logged-in user (exporting it: PIPL art. 45)."""
    return [(ALLOW, AUTHENTICATED, ("view", "change_password", "export_data"))]


def invitations_acl(_: Collection) -> ACL:
    return [
        (ALLOW, PLATFORM_ADMIN, ("view", "create", "invite_platform_admin")),
        (ALLOW, role(Role.COMMITTEE_ADMIN), ("view", "create")),
    ]


def invitation_acl(obj: Invitation) -> ACL:
    acl: list[ACE] = [
        (ALLOW, PLATFORM_ADMIN, ("view", "revoke")),
        (ALLOW, user(obj.created_by_id), ("view", "revoke")),
    ]
    if obj.committee_id is not None:
        acl.append((ALLOW, committee(obj.committee_id, Role.COMMITTEE_ADMIN), ("view", "revoke")))
    return acl


def users_acl(_: Collection) -> ACL:
    return [(ALLOW, PLATFORM_ADMIN, "view")]


def user_acl(obj: User) -> ACL:
    return [(ALLOW, PLATFORM_ADMIN, ("view", "activate"))]


RULES: dict[type | Collection, AclFunction] = {
    ACCOUNT: account_acl,
    INVITATIONS: invitations_acl,
    Invitation: invitation_acl,
    USERS: users_acl,
    User: user_acl,
}
