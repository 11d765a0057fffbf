"""Who may see and act on a case's settlement agreement.

The case's mediator drafts it, puts a version up for signature and follows its fulfilment.
The claimant who filed and the respondent firm's representatives read it, comment on its
versions and sign it (each for their side); the firm records payments and the claimant
confirms or disputes them. The committee's administrators read it, enter the court's answer to
an application for judicial confirmation and record court referrals ("judicial"), and may
follow fulfilment as the mediator does.

Once a case is closed, the claimant and the firm's representatives may rate it ("rate").

When mediation fails, the mediator writes the record of undisputed facts ("write_facts"), the
parties confirm it ("confirm_facts"), and the mediator or the staff transfer the case to
litigation ("transfer"); all of them may read the record and download the case file.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.agreements.models import Agreement, UndisputedFacts
from portal.cases.models import Case
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


@dataclass(frozen=True)
class AgreementAccess:
    """A case's agreement (None before the mediator starts one) with its case."""

    case: Case
    agreement: Agreement | None


def agreement_acl(resource: AgreementAccess) -> ACL:
    case = resource.case
    if case.status == "draft":
        return []  # a draft is its filer's alone (portal.cases.policy)
    acl: list[ACE] = [
        (
            ALLOW,
            committee(case.committee_id, Role.COMMITTEE_ADMIN),
            ("view", "follow", "judicial"),
        ),
        (ALLOW, role(Role.PLATFORM_ADMIN), "view"),
    ]
    if case.mediator_id is not None:
        acl.append((ALLOW, user(case.mediator_id), ("view", "draft", "follow")))
    if resource.agreement is None:
        return acl  # nothing to read yet but for the mediator, who may start it
    acl.append((ALLOW, user(case.filer_id), ("view", "comment", "sign", "confirm_payment")))
    if case.respondent_firm_id is not None:
        acl.append(
            (
                ALLOW,
                firm(case.respondent_firm_id, Role.FIRM_REP),
                ("view", "comment", "sign", "record_payment"),
            )
        )
    return acl


@dataclass(frozen=True)
class SurveyAccess:
    """The satisfaction survey of a case (open once the case is closed)."""

    case: Case


def survey_acl(resource: SurveyAccess) -> ACL:
    case = resource.case
    if case.status != "closed":
        return []
    acl: list[ACE] = [(ALLOW, user(case.filer_id), "rate")]
    if case.respondent_firm_id is not None:
        acl.append((ALLOW, firm(case.respondent_firm_id, Role.FIRM_REP), "rate"))
    return acl


@dataclass(frozen=True)
class LitigationAccess:
    """A case's record of undisputed facts and its transfer to litigation."""

    case: Case
    facts: UndisputedFacts | None


def litigation_acl(resource: LitigationAccess) -> ACL:
    case = resource.case
    if case.status == "draft":
        return []
    acl: list[ACE] = [
        (ALLOW, committee(case.committee_id, Role.COMMITTEE_ADMIN), ("view", "transfer")),
    ]
    if case.mediator_id is not None:
        acl.append((ALLOW, user(case.mediator_id), ("view", "write_facts", "transfer")))
    parties: tuple[str, ...] = ("view", "confirm_facts")
    acl.append((ALLOW, user(case.filer_id), parties))
    if case.respondent_firm_id is not None:
        acl.append((ALLOW, firm(case.respondent_firm_id, Role.FIRM_REP), parties))
    return acl


RULES: dict[type | Collection, AclFunction] = {
    AgreementAccess: agreement_acl,
    SurveyAccess: survey_acl,
    LitigationAccess: litigation_acl,
}
