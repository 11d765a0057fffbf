"""Who may see an evidence item and run the evidence log."""

from __future__ import annotations

from dataclasses import dataclass

from portal.cases.models import Case, CaseMaterial
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

EVIDENCE_LOG = Collection("evidence_log")
# Identity papers and powers of attorney: never shown to the firm.
PERSONAL_KINDS = frozenset({"identity", "power_of_attorney"})


@dataclass(frozen=True)
class Item:
    """An evidence item with its case (the ACL needs both)."""

    material: CaseMaterial
    case: Case


def item_acl(item: Item) -> ACL:
    m, case = item.material, item.case
    acl: list[ACE] = [
        (ALLOW, committee(case.committee_id, Role.COMMITTEE_ADMIN), "view"),
    ]
    if m.uploaded_by_id is not None:
        acl.append((ALLOW, user(m.uploaded_by_id), "view"))
    if case.mediator_id is not None:
        acl.append((ALLOW, user(case.mediator_id), "view"))
    shared = m.visibility == "parties" and case.status != "draft"
    # The claimant's side sees its own items and what is shared with both parties.
    if m.party == "claimant" or shared:
        acl.append((ALLOW, user(case.filer_id), "view"))
    # The firm sees its own side's items and shared ones, never identity papers.
    firm_side = m.party == "respondent" or shared
    if case.respondent_firm_id is not None and m.kind not in PERSONAL_KINDS and firm_side:
        acl.append((ALLOW, firm(case.respondent_firm_id, Role.FIRM_REP), "view"))
    return acl


def log_acl(_: Collection) -> ACL:
    return [
        (ALLOW, role(Role.COMMITTEE_ADMIN), ("view", "manage")),
        (ALLOW, role(Role.PLATFORM_ADMIN), ("view", "manage")),
    ]


RULES: dict[type | Collection, AclFunction] = {Item: item_acl, EVIDENCE_LOG: log_acl}
