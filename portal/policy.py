"""The permission mechanism: "may this identity do this to this resource?".

Each feature states its own rules in ``<feature>/policy.py`` as a mapping from a resource (a
model class, or a named :class:`Collection` for things like "the list of firms") to a function
returning that resource's access-control list, in the style of Warehouse and Pyramid. This module
imports no feature; ``portal.app`` hands it the features' rules.

Every view and socket handler asks :meth:`Policy.require`. A refusal raises :class:`NotPermitted`;
the web layer turns it into a redirect to the login page for anonymous visitors and a 404 for
everyone else, so other people's objects are indistinguishable from missing ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal


class Role(StrEnum):
    CONSUMER = "consumer"
    FIRM_REP = "firm_rep"
    MEDIATOR = "mediator"
    COMMITTEE_ADMIN = "committee_admin"
    PLATFORM_ADMIN = "platform_admin"


EVERYONE = "system:everyone"
AUTHENTICATED = "system:authenticated"


def role(r: Role) -> str:
    return f"role:{r.value}"


def user(user_id: int) -> str:
    return f"user:{user_id}"


def firm(firm_id: int, as_role: Role | None = None) -> str:
    """Members of a firm, or only those of them with ``as_role``."""
    return f"firm:{firm_id}" + (f":{as_role.value}" if as_role else "")


def committee(committee_id: int, as_role: Role | None = None) -> str:
    """Members of a committee, or only those of them with ``as_role``."""
    return f"committee:{committee_id}" + (f":{as_role.value}" if as_role else "")


@dataclass(frozen=True)
class Identity:
    """Who is asking: built once per request (or socket) from the authenticated session."""

    user_id: int | None = None
    role: Role | None = None
    firm_id: int | None = None
    committee_id: int | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    def principals(self) -> frozenset[str]:
        found = {EVERYONE}
        if self.user_id is not None and self.role is not None:
            found |= {AUTHENTICATED, user(self.user_id), role(self.role)}
            if self.firm_id is not None:
                found |= {firm(self.firm_id), firm(self.firm_id, self.role)}
            if self.committee_id is not None:
                found |= {committee(self.committee_id), committee(self.committee_id, self.role)}
        return frozenset(found)


ANONYMOUS = Identity()

Action = Literal["allow", "deny"]
ALLOW: Action = "allow"
DENY: Action = "deny"
ALL_PERMISSIONS = "*"
# (action, principal, permission or tuple of permissions)
ACE = tuple[Action, str, str | tuple[str, ...]]
ACL = Sequence[ACE]
AclFunction = Callable[[Any], ACL]


@dataclass(frozen=True)
class Collection:
    """A resource that is not one row: "the firms", "the invitations"."""

    name: str


class NotPermitted(Exception):
    def __init__(self, permission: str, resource: object) -> None:
        super().__init__(f"{permission} on {resource!r} not permitted")
        self.permission = permission
        self.resource = resource


class Policy:
    def __init__(self, rules: Iterable[Mapping[type | Collection, AclFunction]] = ()) -> None:
        self._acls: dict[type | Collection, AclFunction] = {}
        for feature_rules in rules:
            for key, acl in feature_rules.items():
                if key in self._acls:
                    raise ValueError(f"two features define rules for {key!r}")
                self._acls[key] = acl

    def acl(self, resource: object) -> ACL:
        key: type | Collection = resource if isinstance(resource, Collection) else type(resource)
        try:
            acl_function = self._acls[key]
        except KeyError:
            raise LookupError(f"no rules for {key!r}: add them to the feature's policy") from None
        return acl_function(resource)

    def permits(self, identity: Identity, permission: str, resource: object) -> bool:
        principals = identity.principals()
        for action, principal, permissions in self.acl(resource):
            if principal not in principals:
                continue
            granted = (permissions,) if isinstance(permissions, str) else permissions
            if permission in granted or ALL_PERMISSIONS in granted:
                return action == ALLOW
        return False

    def require(self, identity: Identity, permission: str, resource: object) -> None:
        if not self.permits(identity, permission, resource):
            raise NotPermitted(permission, resource)
