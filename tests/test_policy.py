"""The permission mechanism itself; the per-route matrix is in test_access_matrix.py."""

from __future__ import annotations

import pytest

from portal.accounts.policy import RULES as ACCOUNT_RULES
from portal.orgs.models import Committee, Firm
from portal.orgs.policy import RULES as ORG_RULES
from portal.policy import (
    ALLOW,
    AUTHENTICATED,
    DENY,
    EVERYONE,
    Collection,
    Identity,
    NotPermitted,
    Policy,
    Role,
    committee,
    firm,
    role,
)

THINGS = Collection("things")


def test_principals_of_anonymous_and_staff() -> None:
    assert Identity().principals() == {EVERYONE}
    staff = Identity(user_id=3, role=Role.COMMITTEE_ADMIN, committee_id=7)
    assert staff.principals() == {
        EVERYONE,
        AUTHENTICATED,
        "user:3",
        role(Role.COMMITTEE_ADMIN),
        committee(7),
        committee(7, Role.COMMITTEE_ADMIN),
    }


def test_first_matching_entry_decides() -> None:
    policy = Policy(
        [
            {
                THINGS: lambda _: [
                    (DENY, "user:1", "view"),
                    (ALLOW, AUTHENTICATED, ("view", "edit")),
                ]
            }
        ]
    )
    one = Identity(user_id=1, role=Role.CONSUMER)
    two = Identity(user_id=2, role=Role.CONSUMER)
    assert not policy.permits(one, "view", THINGS)
    assert policy.permits(one, "edit", THINGS)
    assert policy.permits(two, "view", THINGS)
    assert not policy.permits(Identity(), "view", THINGS)
    with pytest.raises(NotPermitted):
        policy.require(Identity(), "view", THINGS)


def test_unknown_resource_is_a_programming_error() -> None:
    with pytest.raises(LookupError):
        Policy().permits(Identity(), "view", object())


def test_two_features_cannot_claim_one_resource() -> None:
    with pytest.raises(ValueError, match="two features"):
        Policy([{THINGS: lambda _: []}, {THINGS: lambda _: []}])


def test_committee_admin_rules_are_scoped_to_their_committee() -> None:
    policy = Policy([ACCOUNT_RULES, ORG_RULES])
    own, other = Committee(id=1), Committee(id=2)
    admin = Identity(user_id=5, role=Role.COMMITTEE_ADMIN, committee_id=1)
    mediator = Identity(user_id=6, role=Role.MEDIATOR, committee_id=1)
    assert policy.permits(admin, "edit", own)
    assert not policy.permits(admin, "edit", other)
    # A mediator shares the committee principal but not the administrator's rights.
    assert not policy.permits(mediator, "edit", own)


def test_firm_rep_sees_only_own_firm() -> None:
    policy = Policy([ACCOUNT_RULES, ORG_RULES])
    rep = Identity(user_id=9, role=Role.FIRM_REP, firm_id=4)
    assert policy.permits(rep, "view", Firm(id=4))
    assert not policy.permits(rep, "view", Firm(id=5))
    assert not policy.permits(rep, "edit", Firm(id=4))
    assert firm(4, Role.FIRM_REP) in rep.principals()
