"""Who may see the oversight screens: statistics, warnings, likeness clusters, the case library."""

from __future__ import annotations

from portal.policy import ACL, ALLOW, AclFunction, Collection, Role, role

# Statistics and early warnings: committee administrators (their committee's figures) and
# platform administrators (all committees).
DASHBOARD = Collection("dashboard")
# Template-complaint clusters over time.
LIKENESS = Collection("likeness")
# The anonymised library of closed cases: mediators and administrators.
LIBRARY = Collection("library")


def dashboard_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.PLATFORM_ADMIN), ("view", "export", "warn")),
        (ALLOW, role(Role.COMMITTEE_ADMIN), ("view", "export", "warn")),
    ]


def likeness_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.PLATFORM_ADMIN), "view"),
        (ALLOW, role(Role.COMMITTEE_ADMIN), "view"),
    ]


def library_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.PLATFORM_ADMIN), "search"),
        (ALLOW, role(Role.COMMITTEE_ADMIN), "search"),
        (ALLOW, role(Role.MEDIATOR), "search"),
    ]


RULES: dict[type | Collection, AclFunction] = {
    DASHBOARD: dashboard_acl,
    LIKENESS: likeness_acl,
    LIBRARY: library_acl,
}
