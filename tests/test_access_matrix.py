"""Every route × every role, with the expected outcome.

The matrix must name every route and method of the app: add a row when you add a route.
Outcomes: "ok" 200, "bad" 400 (allowed, but the empty form is refused), "done" 303 elsewhere than
the login page (allowed and carried out), "login" 303 to the login page (anonymous), "404".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from portal.accounts import service as accounts
from portal.orgs import service as orgs
from portal.policy import Role
from tests.conftest import csrf_token, log_in
from tests.factories import Person, make_committee, make_firm, make_user

ROLES = ["anonymous", "consumer", "firm_rep", "mediator", "committee_admin", "platform_admin"]


@dataclass
class World:
    people: dict[str, Person]
    ids: dict[str, Any] = field(default_factory=dict)


async def build_world(app: Any) -> World:
    committee_a = await make_committee(app)
    committee_b = await make_committee(app)
    firm_x = await make_firm(app)
    firm_y = await make_firm(app)
    people = {
        "consumer": await make_user(app, Role.CONSUMER, phone="13900000001"),
        "firm_rep": await make_user(app, Role.FIRM_REP, firm=firm_x),
        "mediator": await make_user(app, Role.MEDIATOR, committee=committee_a),
        "committee_admin": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee_a),
        "platform_admin": await make_user(app, Role.PLATFORM_ADMIN),
    }
    mediator_b = await make_user(app, Role.MEDIATOR, committee=committee_b)
    other_consumer = await make_user(app, Role.CONSUMER)
    state = app.starlette.state
    async with state.db() as db:
        _, profile = await orgs.get_mediator(db, people["mediator"].id)
        tie = await orgs.declare_tie(
            db, people["mediator"].id, profile, firm_id=firm_y.id, kind="former_employee", note=""
        )
        admin = people["committee_admin"].user
        _, accept_token = await accounts.create_invitation(
            db,
            state.settings,
            admin,
            role=Role.MEDIATOR,
            invitee_name="新人",
            firm_id=None,
            committee_id=committee_a.id,
        )
        to_revoke, _ = await accounts.create_invitation(
            db,
            state.settings,
            admin,
            role=Role.MEDIATOR,
            invitee_name="撤回",
            firm_id=None,
            committee_id=committee_a.id,
        )
    return World(
        people=people,
        ids={
            "committee_a": committee_a.id,
            "committee_b": committee_b.id,
            "firm_x": firm_x.id,
            "firm_y": firm_y.id,
            "mediator_a": people["mediator"].id,
            "mediator_b": mediator_b.id,
            "other_consumer": other_consumer.id,
            "tie": tie.id,
            "accept_token": accept_token,
            "revoke": to_revoke.id,
        },
    )


Params = Callable[[World], dict[str, Any]]


@dataclass
class Case:
    route: str
    method: str
    expect: dict[str, str]
    params: Params = lambda w: {}
    data: dict[str, str] = field(default_factory=dict)
    label: str = ""


def everyone(outcome: str) -> dict[str, str]:
    return dict.fromkeys(ROLES, outcome)


def only(outcome: str, *roles: str, others: str = "404") -> dict[str, str]:
    expect = {r: (outcome if r in roles else others) for r in ROLES}
    if "anonymous" not in roles:
        expect["anonymous"] = "login"
    return expect


def logged_in(outcome: str) -> dict[str, str]:
    return {**everyone(outcome), "anonymous": "login"}


ADMINS = ("committee_admin", "platform_admin")

CASES = [
    Case("home", "GET", everyone("ok")),
    Case("accounts.register", "GET", everyone("ok")),
    Case("accounts.register", "POST", everyone("bad")),
    Case("accounts.login", "GET", everyone("ok")),
    Case("accounts.login", "POST", everyone("bad")),
    Case("accounts.profile", "GET", logged_in("ok")),
    Case("accounts.password", "GET", logged_in("ok")),
    Case("accounts.password", "POST", logged_in("bad")),
    Case("accounts.preferences", "POST", everyone("done"), data={"locale": "en"}),
    Case(
        "accounts.invitation_accept",
        "GET",
        everyone("ok"),
        params=lambda w: {"token": w.ids["accept_token"]},
    ),
    Case(
        "accounts.invitation_accept",
        "POST",
        everyone("bad"),
        params=lambda w: {"token": w.ids["accept_token"]},
    ),
    Case("accounts.invitations", "GET", only("ok", *ADMINS)),
    Case("accounts.invitations", "POST", only("bad", *ADMINS)),
    Case(
        "accounts.invitation_revoke",
        "POST",
        only("done", *ADMINS),
        params=lambda w: {"invitation_id": w.ids["revoke"]},
    ),
    Case("accounts.users", "GET", only("ok", "platform_admin")),
    Case(
        "accounts.user_active",
        "POST",
        only("done", "platform_admin"),
        params=lambda w: {"user_id": w.ids["other_consumer"]},
        data={"active": "0"},
    ),
    Case("orgs.committees", "GET", only("ok", *ADMINS)),
    Case("orgs.committees", "POST", only("bad", "platform_admin")),
    Case(
        "orgs.committee",
        "GET",
        only("ok", *ADMINS),
        params=lambda w: {"committee_id": w.ids["committee_a"]},
        label="own committee",
    ),
    Case(
        "orgs.committee",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"committee_id": w.ids["committee_b"]},
        label="other committee",
    ),
    Case(
        "orgs.committee",
        "POST",
        only("bad", *ADMINS),
        params=lambda w: {"committee_id": w.ids["committee_a"]},
    ),
    Case("orgs.firms", "GET", only("ok", *ADMINS)),
    Case("orgs.firms", "POST", only("bad", *ADMINS)),
    Case(
        "orgs.firm",
        "GET",
        only("ok", "firm_rep", *ADMINS),
        params=lambda w: {"firm_id": w.ids["firm_x"]},
        label="own firm",
    ),
    Case(
        "orgs.firm",
        "GET",
        only("ok", *ADMINS),
        params=lambda w: {"firm_id": w.ids["firm_y"]},
        label="other firm",
    ),
    Case("orgs.firm", "POST", only("bad", *ADMINS), params=lambda w: {"firm_id": w.ids["firm_x"]}),
    Case("orgs.mediators", "GET", only("ok", *ADMINS)),
    Case(
        "orgs.mediator",
        "GET",
        only("ok", "mediator", *ADMINS),
        params=lambda w: {"user_id": w.ids["mediator_a"]},
        label="own committee",
    ),
    Case(
        "orgs.mediator",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"user_id": w.ids["mediator_b"]},
        label="other committee",
    ),
    Case(
        "orgs.mediator",
        "POST",
        only("bad", *ADMINS),
        params=lambda w: {"user_id": w.ids["mediator_a"]},
    ),
    Case("orgs.my_ties", "GET", only("ok", "mediator")),
    Case("orgs.my_ties", "POST", only("bad", "mediator")),
    Case(
        "orgs.tie_withdraw",
        "POST",
        only("done", "mediator"),
        params=lambda w: {"tie_id": w.ids["tie"]},
    ),
    # Last: it ends the session.
    Case("accounts.logout", "POST", everyone("done")),
]

# Not pages: served by StaticFiles.
UNLISTED = {"static"}


def outcome(response: httpx.Response) -> str:
    if response.status_code == 303:
        return "login" if response.headers["location"].startswith("/accounts/login") else "done"
    return {200: "ok", 400: "bad", 404: "404"}.get(response.status_code, str(response.status_code))


def test_matrix_names_every_route_and_method(app: Any) -> None:
    covered = {(c.route, c.method) for c in CASES}
    missing = []
    for route in app.starlette.routes:
        if not isinstance(route, Route) or route.name in UNLISTED:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if (route.name, method) not in covered:
                missing.append(f"{method} {route.name}")
    assert not missing, f"routes missing from the access matrix: {missing}"
    for case in CASES:
        assert set(case.expect) == set(ROLES), case


@pytest.mark.parametrize("who", ROLES)
async def test_access_matrix(app: Any, client: httpx.AsyncClient, who: str) -> None:
    world = await build_world(app)
    if who != "anonymous":
        person = world.people[who]
        await log_in(client, person.login, person.password)
    token = await csrf_token(client)
    wrong = []
    for case in CASES:
        path = app.starlette.url_path_for(case.route, **case.params(world))
        if case.method == "GET":
            response = await client.get(path)
        else:
            response = await client.post(path, data={"csrf_token": token, **case.data})
        got = outcome(response)
        if case.route == "accounts.preferences":
            # Undo the language switch so later pages stay comparable.
            await client.post(path, data={"csrf_token": token, "locale": "zh_CN"})
        if got != case.expect[who]:
            wrong.append(
                f"{case.method} {case.route} {case.label}: {got}, expected {case.expect[who]}"
            )
    assert not wrong, "\n".join(wrong)
