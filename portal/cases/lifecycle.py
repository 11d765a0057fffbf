"""The case lifecycle: every status and every transition, in one place.

draft → submitted → needs_info ⇄ submitted → accepted | rejected | ineligible;
accepted → assigned → in_mediation → settled → fulfilled → closed;
in_mediation → failed → transferred_to_litigation → closed (or failed → closed when the
claimant does not go to court);
withdrawn from any state before settled.

Each transition names who may make it (a party's relation to the case, not a global role) and
whether it needs a reason. Services call :func:`transition_for`; pages offer only
:func:`available` transitions, so an illegal move is neither offered nor accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from portal.errors import DomainError
from portal.i18n import Msg, _l


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    NEEDS_INFO = "needs_info"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    INELIGIBLE = "ineligible"
    ASSIGNED = "assigned"
    IN_MEDIATION = "in_mediation"
    SETTLED = "settled"
    FULFILLED = "fulfilled"
    CLOSED = "closed"
    FAILED = "failed"
    TRANSFERRED = "transferred_to_litigation"
    WITHDRAWN = "withdrawn"


class Party(StrEnum):
    """How the acting user relates to the case."""

    CLAIMANT = "claimant"  # the person who filed it (consumer, agent or firm filer)
    STAFF = "staff"  # an administrator of the case's committee
    MEDIATOR = "mediator"  # the mediator assigned to the case
    RESPONDENT = "respondent"  # a representative of the respondent firm


STATUS_LABELS: dict[Status, Msg] = {
    Status.DRAFT: _l("Draft"),
    Status.SUBMITTED: _l("Submitted, awaiting review"),
    Status.NEEDS_INFO: _l("More material needed"),
    Status.ACCEPTED: _l("Accepted for mediation"),
    Status.REJECTED: _l("Not accepted"),
    Status.INELIGIBLE: _l("Not eligible for mediation"),
    Status.ASSIGNED: _l("Mediator assigned"),
    Status.IN_MEDIATION: _l("In mediation"),
    Status.SETTLED: _l("Settled"),
    Status.FULFILLED: _l("Agreement carried out"),
    Status.CLOSED: _l("Closed"),
    Status.FAILED: _l("Mediation failed"),
    Status.TRANSFERRED: _l("Transferred to litigation"),
    Status.WITHDRAWN: _l("Withdrawn"),
}

OPEN_STATUSES = frozenset(
    {
        Status.SUBMITTED,
        Status.NEEDS_INFO,
        Status.ACCEPTED,
        Status.ASSIGNED,
        Status.IN_MEDIATION,
        Status.SETTLED,
        Status.FAILED,
    }
)
FINAL_STATUSES = frozenset({Status.REJECTED, Status.INELIGIBLE, Status.CLOSED, Status.WITHDRAWN})


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[Status]
    target: Status
    parties: frozenset[Party]
    label: Msg
    needs_reason: bool = False


def _t(
    name: str,
    sources: set[Status],
    target: Status,
    parties: set[Party],
    label: Msg,
    needs_reason: bool = False,
) -> Transition:
    return Transition(name, frozenset(sources), target, frozenset(parties), label, needs_reason)


WITHDRAWABLE = {
    Status.DRAFT,
    Status.SUBMITTED,
    Status.NEEDS_INFO,
    Status.ACCEPTED,
    Status.ASSIGNED,
    Status.IN_MEDIATION,
}

TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in [
        _t("submit", {Status.DRAFT}, Status.SUBMITTED, {Party.CLAIMANT}, _l("Submit")),
        _t(
            "request_info",
            {Status.SUBMITTED},
            Status.NEEDS_INFO,
            {Party.STAFF},
            _l("Ask for more material"),
            needs_reason=True,
        ),
        _t(
            "provide_info",
            {Status.NEEDS_INFO},
            Status.SUBMITTED,
            {Party.CLAIMANT},
            _l("Send the requested material"),
        ),
        _t("accept", {Status.SUBMITTED}, Status.ACCEPTED, {Party.STAFF}, _l("Accept")),
        _t(
            "reject",
            {Status.SUBMITTED},
            Status.REJECTED,
            {Party.STAFF},
            _l("Do not accept"),
            needs_reason=True,
        ),
        _t(
            "mark_ineligible",
            {Status.SUBMITTED},
            Status.INELIGIBLE,
            {Party.STAFF},
            _l("Mark as not eligible for mediation"),
            needs_reason=True,
        ),
        _t("assign", {Status.ACCEPTED}, Status.ASSIGNED, {Party.STAFF}, _l("Assign a mediator")),
        _t(
            "start_mediation",
            {Status.ASSIGNED},
            Status.IN_MEDIATION,
            {Party.MEDIATOR, Party.STAFF},
            _l("Start mediation"),
        ),
        _t(
            "settle",
            {Status.IN_MEDIATION},
            Status.SETTLED,
            {Party.MEDIATOR},
            _l("Record a settlement"),
        ),
        _t(
            "fail",
            {Status.IN_MEDIATION},
            Status.FAILED,
            {Party.MEDIATOR},
            _l("Record that mediation failed"),
            needs_reason=True,
        ),
        _t(
            "transfer",
            {Status.FAILED},
            Status.TRANSFERRED,
            {Party.MEDIATOR, Party.STAFF},
            _l("Transfer to litigation"),
        ),
        _t(
            "fulfil",
            {Status.SETTLED},
            Status.FULFILLED,
            {Party.MEDIATOR, Party.STAFF},
            _l("Record that the agreement was carried out"),
        ),
        _t(
            "close",
            {Status.FULFILLED, Status.FAILED, Status.TRANSFERRED},
            Status.CLOSED,
            {Party.MEDIATOR, Party.STAFF},
            _l("Close the case"),
        ),
        _t(
            "withdraw",
            WITHDRAWABLE,
            Status.WITHDRAWN,
            {Party.CLAIMANT},
            _l("Withdraw the case"),
            needs_reason=True,
        ),
    ]
}


def available(status: Status, parties: set[Party] | frozenset[Party]) -> list[Transition]:
    """The transitions these parties may make from ``status``, in a stable order."""
    return [t for t in TRANSITIONS.values() if status in t.sources and t.parties & parties]


def transition_for(
    name: str, status: Status, parties: set[Party] | frozenset[Party], reason: str = ""
) -> Transition:
    """The transition ``name`` if these parties may make it now; otherwise a DomainError."""
    transition = TRANSITIONS.get(name)
    if transition is None or status not in transition.sources:
        raise DomainError(_l("This action is not possible in the case's current state."))
    if not transition.parties & parties:
        raise DomainError(_l("You cannot take this action on this case."))
    if transition.needs_reason and not reason.strip():
        raise DomainError(_l("Give a reason."), field="reason")
    return transition


def replay(steps: list[tuple[str | None, str]]) -> Status:
    """The status a timeline of (from, to) steps leads to; refuses a broken chain."""
    status = Status.DRAFT
    for before, after in steps:
        if before is not None and Status(before) != status:
            raise ValueError(f"timeline breaks: {before} after {status}")
        target = Status(after)
        if not any(status in t.sources and t.target == target for t in TRANSITIONS.values()):
            raise ValueError(f"no transition {status} -> {target}")
        status = target
    return status
