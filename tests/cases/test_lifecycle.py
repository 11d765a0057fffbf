"""The lifecycle as a state machine: no sequence of actions leaves the diagram, and the
timeline always replays to the current state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.cases.lifecycle import (
    FINAL_STATUSES,
    TRANSITIONS,
    WITHDRAWABLE,
    Party,
    Status,
    available,
    replay,
    transition_for,
)
from portal.errors import DomainError

# The diagram of the issue, written out edge by edge (plus failed → closed).
DIAGRAM = {
    (Status.DRAFT, Status.SUBMITTED),
    (Status.SUBMITTED, Status.NEEDS_INFO),
    (Status.NEEDS_INFO, Status.SUBMITTED),
    (Status.SUBMITTED, Status.ACCEPTED),
    (Status.SUBMITTED, Status.REJECTED),
    (Status.SUBMITTED, Status.INELIGIBLE),
    (Status.ACCEPTED, Status.ASSIGNED),
    (Status.ASSIGNED, Status.IN_MEDIATION),
    (Status.IN_MEDIATION, Status.SETTLED),
    (Status.SETTLED, Status.FULFILLED),
    (Status.FULFILLED, Status.CLOSED),
    (Status.IN_MEDIATION, Status.FAILED),
    (Status.FAILED, Status.TRANSFERRED),
    (Status.TRANSFERRED, Status.CLOSED),
    (Status.FAILED, Status.CLOSED),
    *((s, Status.WITHDRAWN) for s in WITHDRAWABLE),
}

actions = st.tuples(
    st.sampled_from([*sorted(TRANSITIONS), "teleport", "reopen"]),
    st.frozensets(st.sampled_from(list(Party)), max_size=2),
    st.sampled_from(["", "  ", "because"]),
)


def test_transitions_are_exactly_the_diagram() -> None:
    edges = {(source, t.target) for t in TRANSITIONS.values() for source in t.sources}
    assert edges == DIAGRAM


def test_nothing_leaves_a_final_state_and_withdrawal_stops_at_settlement() -> None:
    for status in FINAL_STATUSES:
        assert available(status, set(Party)) == []
    for status in (Status.SETTLED, Status.FULFILLED, Status.FAILED, Status.TRANSFERRED):
        assert "withdraw" not in {t.name for t in available(status, set(Party))}


@settings(max_examples=300, deadline=None)
@given(st.lists(actions, max_size=40))
def test_random_actions_stay_in_the_diagram_and_replay(
    steps: list[tuple[str, frozenset[Party], str]],
) -> None:
    status = Status.DRAFT
    timeline: list[tuple[str | None, str]] = [(None, Status.DRAFT.value)]
    for name, parties, reason in steps:
        offered = {t.name for t in available(status, parties)}
        try:
            transition = transition_for(name, status, parties, reason)
        except DomainError:
            # Refused: it was not offered, or it needed a reason that was not given.
            needs_reason = name in TRANSITIONS and TRANSITIONS[name].needs_reason
            assert name not in offered or (needs_reason and not reason.strip())
            continue
        assert name in offered, "an action that is not offered was accepted"
        assert (status, transition.target) in DIAGRAM
        timeline.append((status.value, transition.target.value))
        status = transition.target
    assert status in set(Status)
    assert replay(timeline[1:]) == status


def test_replay_refuses_a_broken_timeline() -> None:
    with pytest.raises(ValueError, match="breaks"):
        replay([("draft", "submitted"), ("accepted", "assigned")])
    with pytest.raises(ValueError, match="no transition"):
        replay([("draft", "closed")])


def test_who_may_do_what() -> None:
    with pytest.raises(DomainError):
        transition_for("accept", Status.SUBMITTED, {Party.CLAIMANT})
    with pytest.raises(DomainError):
        transition_for("settle", Status.IN_MEDIATION, {Party.STAFF})
    with pytest.raises(DomainError):
        transition_for("reject", Status.SUBMITTED, {Party.STAFF}, reason=" ")
    assert transition_for("settle", Status.IN_MEDIATION, {Party.MEDIATOR}).target == Status.SETTLED
