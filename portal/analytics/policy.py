"""Who may see the oversight screens: statistics, warnings, likeness clusters, the case library."""

from __future__ import annotations

from portal.analytics.models import RiskNotice
from portal.policy import ACL, ALLOW, AclFunction, Collection, Role, committee, firm, role

# Statistics and early warnings: committee administrators (their committee's figures) and
# platform administrators (all committees).
DASHBOARD = Collection("dashboard")
# Template-complaint clusters over time.
LIKENESS = Collection("likeness")
# Risk notices: firm representatives see their firm's; administrators the ones they may send.
NOTICES = Collection("risk_notices")
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


def notices_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.PLATFORM_ADMIN), "list"),
        (ALLOW, role(Role.COMMITTEE_ADMIN), "list"),
        (ALLOW, role(Role.FIRM_REP), "list"),
    ]


def notice_acl(notice: RiskNotice) -> ACL:
    acl: list[tuple[str, str, str | tuple[str, ...]]] = [
        (ALLOW, firm(notice.firm_id, Role.FIRM_REP), ("view", "acknowledge")),
        (ALLOW, role(Role.PLATFORM_ADMIN), "view"),
    ]
    if notice.committee_id is not None:
        acl.append((ALLOW, committee(notice.committee_id, Role.COMMITTEE_ADMIN), "view"))
    return acl  # type: ignore[return-value]


RULES: dict[type | Collection, AclFunction] = {
    DASHBOARD: dashboard_acl,
    LIKENESS: likeness_acl,
    LIBRARY: library_acl,
    NOTICES: notices_acl,
    RiskNotice: notice_acl,
}
