"""Every route × every role, with the expected outcome.

The matrix must name every route and method of the app: add a row when you add a route.
Outcomes: "ok" 200, "bad" 400 (allowed, but the empty form is refused), "done" 303 elsewhere than
the login page (allowed and carried out), "login" 303 to the login page (anonymous), "404".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.routing import Route

from portal.accounts import service as accounts
from portal.accounts.models import User
from portal.agreements import service as agreements
from portal.analytics import library
from portal.analytics.library_models import LibraryEntry
from portal.analytics.models import RiskNotice
from portal.api import service as api
from portal.api import webhooks
from portal.api.models import WebhookDelivery
from portal.api.views import ENDPOINTS
from portal.cases import imports
from portal.cases import service as cases
from portal.cases.models import Case as CaseRow
from portal.cases.models import CaseMaterial
from portal.evidence.models import LogLeaf
from portal.notify.models import Notification
from portal.orgs import service as orgs
from portal.policy import Role
from portal.workdays import service as workdays
from tests.conftest import csrf_token, log_in
from tests.factories import (
    Person,
    make_case,
    make_committee,
    make_draft,
    make_firm,
    make_meeting,
    make_minutes,
    make_user,
    verify_phone,
)

ROLES = ["anonymous", "consumer", "firm_rep", "mediator", "committee_admin", "platform_admin"]


@dataclass
class World:
    people: dict[str, Person]
    ids: dict[str, Any] = field(default_factory=dict)


async def build_world(app: Any) -> World:
    committee_a = await make_committee(app)
    committee_b = await make_committee(app, categories=["insurance"])
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
    other_consumer = await make_user(app, Role.CONSUMER, phone="13900000002")
    await verify_phone(app, people["consumer"])
    await verify_phone(app, other_consumer)
    case_open = await make_case(
        app, people["consumer"], firm_x, status="assigned", mediator_id=people["mediator"].id
    )
    case_other = await make_case(app, other_consumer, firm_y, category="insurance")
    draft = await make_draft(app, people["consumer"], firm_x)
    meeting = await make_meeting(app, case_open, people["mediator"])
    case_agreed = await make_case(
        app, people["consumer"], firm_x, status="assigned", mediator_id=people["mediator"].id
    )
    case_closed = await make_case(
        app, people["consumer"], firm_x, status="assigned", mediator_id=people["mediator"].id
    )
    await make_minutes(app, meeting.id, people["mediator"], "调解笔录草稿")
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
        materials = {m.kind: m.id for m in await cases.materials(db, case_open)}
        draft_material = (await cases.materials(db, draft))[0].id
        contract = await db.get(CaseMaterial, materials["contract"])
        assert contract is not None and contract.leaf_id is not None
        leaf = await db.get(LogLeaf, contract.leaf_id)
        assert leaf is not None
        notice = await db.scalar(
            select(Notification.id)
            .where(Notification.user_id == people["consumer"].id, Notification.channel == "in_app")
            .limit(1)
        )
        mediator = await db.get(User, people["mediator"].id)
        loaded = await db.get(CaseRow, case_agreed.id)
        assert mediator is not None and loaded is not None
        await cases.apply_transition(db, loaded, mediator, "start_mediation")
        await agreements.start(db, state.vault, await agreements.access(db, loaded.id), mediator)
        closed = await db.get(CaseRow, case_closed.id)
        assert closed is not None
        await cases.apply_transition(db, closed, mediator, "start_mediation")
        await cases.apply_transition(db, closed, mediator, "fail", "双方分歧过大")
        await cases.apply_transition(db, closed, mediator, "close")
        await db.commit()
        await library.sync_library(db, state.vault)
        library_entry = await db.scalar(select(LibraryEntry.id).limit(1))
        assert library_entry is not None
        day = await workdays.add_calendar_day(
            db, people["platform_admin"].id, day=date(2031, 1, 1), kind="holiday", name="元旦"
        )
        risk_notice = RiskNotice(
            firm_id=firm_x.id,
            committee_id=committee_a.id,
            sent_by_id=people["committee_admin"].id,
            category="",
            window_days=7,
            figures={"observed": 8, "expected": 0.1, "baseline": 2, "baseline_days": 180},
            message="请核查投诉激增原因。",
        )
        db.add(risk_notice)
        await db.commit()
    async with app.starlette.state.db() as db:
        rep = await db.get(User, people["firm_rep"].id)
        assert rep is not None
        api_token = await api.create_token(db, rep, name="系统", scopes=["cases:read"], days=30)
        hook = await webhooks.add_endpoint(
            db,
            app.starlette.state.vault,
            rep,
            url="https://hooks.example.com/jiefen",
            events=["case.status_changed"],
            allow_private=True,
        )
        delivery = WebhookDelivery(
            endpoint_id=hook.endpoint.id,
            event_id="evt_1",
            event_type="case.status_changed",
            payload="{}",
            state="failed",
        )
        db.add(delivery)
        await db.commit()
    async with app.starlette.state.db() as db:
        importers = {}
        for role in ("firm_rep", "committee_admin"):
            importer = await db.get(User, people[role].id)
            assert importer is not None
            batch = await imports.create_batch(
                db, app.starlette.state.blobs, importer, kind="firm", filename="a.csv", data=b"x"
            )
            importers[role] = batch.id
    return World(
        people=people,
        ids={
            "firm_import": importers["firm_rep"],
            "committee_import": importers["committee_admin"],
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
            "case": case_open.id,
            "other_case": case_other.id,
            "draft": draft.id,
            "identity": materials["identity"],
            "contract": materials["contract"],
            "draft_material": draft_material,
            "leaf_hash": bytes(leaf.hash).hex(),
            "notice": notice,
            "day": day.id,
            "meeting": meeting.id,
            "agreed": case_agreed.id,
            "risk_notice": risk_notice.id,
            "library_entry": library_entry,
            "api_token": api_token.token.id,
            "webhook": hook.endpoint.id,
            "delivery": delivery.id,
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
    Case("ops.healthz", "GET", everyone("ok")),
    Case("ops.readyz", "GET", everyone("ok")),
    Case("ops.metrics", "GET", everyone("ok"), label="from loopback (the test client)"),
    Case("accounts.register", "GET", everyone("ok")),
    Case("accounts.register", "POST", everyone("bad")),
    Case("accounts.login", "GET", everyone("ok")),
    Case("accounts.login", "POST", everyone("bad")),
    Case("accounts.profile", "GET", logged_in("ok")),
    Case("accounts.password", "GET", logged_in("ok")),
    Case("accounts.password", "POST", logged_in("bad")),
    Case("accounts.data", "GET", logged_in("ok")),
    Case("accounts.data", "POST", logged_in("bad")),
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
    Case("accounts.phone", "GET", logged_in("ok")),
    Case("accounts.phone", "POST", logged_in("bad"), data={"action": "verify", "code": "1"}),
    Case("cases.list", "GET", logged_in("ok")),
    Case("cases.export", "GET", logged_in("ok")),
    Case("cases.firm_link", "GET", everyone("done"), params=lambda w: {"token": "x"}),
    Case("cases.batch", "POST", only("bad", *ADMINS, "mediator"), label="no action, no case"),
    Case("cases.import", "GET", only("ok", "firm_rep", "committee_admin")),
    Case("cases.import", "POST", only("bad", "firm_rep", "committee_admin"), label="no file"),
    Case(
        "cases.import_template",
        "GET",
        only("ok", "firm_rep", "committee_admin"),
        params=lambda w: {"fmt": "csv"},
    ),
    Case(
        "cases.import_batch",
        "GET",
        only("ok", "firm_rep"),
        params=lambda w: {"batch_id": w.ids["firm_import"]},
        label="a firm's batch",
    ),
    Case(
        "cases.import_batch",
        "GET",
        only("ok", "committee_admin"),
        params=lambda w: {"batch_id": w.ids["committee_import"]},
        label="a committee's batch",
    ),
    Case(
        "cases.import_start",
        "POST",
        only("done", "firm_rep"),
        params=lambda w: {"batch_id": w.ids["firm_import"]},
        label="still being checked: refused with a message",
    ),
    Case("api.integration", "GET", only("ok", "firm_rep")),
    Case("api.integration", "POST", only("bad", "firm_rep"), label="an empty token form"),
    Case(
        "api.revoke",
        "POST",
        only("done", "firm_rep"),
        params=lambda w: {"token_id": w.ids["api_token"]},
        label="the firm's own representatives only",
    ),
    Case("api.qr", "GET", only("ok", "firm_rep")),
    Case(
        "api.webhook",
        "GET",
        only("ok", "firm_rep"),
        params=lambda w: {"webhook_id": w.ids["webhook"]},
    ),
    Case(
        "api.webhook_resend",
        "POST",
        only("done", "firm_rep"),
        params=lambda w: {"webhook_id": w.ids["webhook"], "delivery_id": w.ids["delivery"]},
    ),
    Case(
        "api.webhook_disable",
        "POST",
        only("done", "firm_rep"),
        params=lambda w: {"webhook_id": w.ids["webhook"]},
    ),
    Case("api.reference", "GET", everyone("ok")),
    Case("api.openapi", "GET", everyone("ok")),
    Case("cases.new", "GET", only("ok", "consumer", "firm_rep")),
    Case("cases.new", "POST", only("bad", "consumer", "firm_rep")),
    Case(
        "cases.detail",
        "GET",
        logged_in("ok"),
        params=lambda w: {"case_id": w.ids["case"]},
        label="a case of committee A, firm X, the consumer, the mediator",
    ),
    Case(
        "cases.detail",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"case_id": w.ids["other_case"]},
        label="someone else's case",
    ),
    Case(
        "cases.detail",
        "GET",
        only("done", "consumer"),
        params=lambda w: {"case_id": w.ids["draft"]},
        label="a draft: only its filer, sent to the wizard",
    ),
    # The full ID and mobile number: the filer, the case's mediator and committee; recorded.
    Case(
        "cases.identity",
        "GET",
        only("ok", "consumer", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
        label="a case of committee A, firm X, the consumer, the mediator",
    ),
    Case(
        "cases.identity",
        "GET",
        only("ok"),
        params=lambda w: {"case_id": w.ids["other_case"]},
        label="someone else's case",
    ),
    Case(
        "cases.identity",
        "GET",
        only("ok"),
        params=lambda w: {"case_id": w.ids["draft"]},
        label="a draft: its wizard shows it",
    ),
    Case(
        "cases.edit",
        "GET",
        only("ok", "consumer"),
        params=lambda w: {"case_id": w.ids["draft"], "step": "claims"},
    ),
    Case(
        "cases.edit",
        "POST",
        only("bad", "consumer"),
        params=lambda w: {"case_id": w.ids["draft"], "step": "claims"},
    ),
    Case(
        "cases.material",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"], "material_id": w.ids["contract"]},
        label="a contract (not the platform's operators)",
    ),
    Case(
        "evidence.receipt",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"], "material_id": w.ids["contract"]},
    ),
    Case(
        "evidence.receipt_json",
        "GET",
        only("ok", "consumer", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"], "material_id": w.ids["identity"]},
        label="identity papers' receipt: not the firm",
    ),
    Case(
        "evidence.public_receipt",
        "GET",
        everyone("ok"),
        params=lambda w: {"leaf_hash": w.ids["leaf_hash"]},
    ),
    Case("evidence.key", "GET", everyone("ok")),
    Case("evidence.consistency", "GET", everyone("bad"), label="no sizes given"),
    Case("evidence.admin", "GET", only("ok", *ADMINS)),
    Case("evidence.checkpoint", "POST", only("done", *ADMINS)),
    Case("evidence.verify", "POST", only("done", *ADMINS)),
    Case(
        "cases.material",
        "GET",
        only("ok", "consumer", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"], "material_id": w.ids["identity"]},
        label="identity papers: not the firm",
    ),
    Case(
        "cases.upload",
        "POST",
        only("done", "consumer", "firm_rep", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.act",
        "POST",
        logged_in("done"),
        params=lambda w: {"case_id": w.ids["case"]},
        data={"action": "start_mediation"},
        label="refused by the lifecycle unless allowed",
    ),
    Case("cases.request", "POST", logged_in("done"), params=lambda w: {"case_id": w.ids["case"]}),
    Case("cases.provide", "POST", logged_in("done"), params=lambda w: {"case_id": w.ids["case"]}),
    Case(
        "cases.assign",
        "GET",
        only("ok", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.assign",
        "POST",
        only("bad", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.recusal",
        "POST",
        only("done", "consumer", "firm_rep"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.recusal_refuse",
        "POST",
        only("done", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.respond",
        "POST",
        only("done", "firm_rep"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.message",
        "POST",
        only("done", "consumer", "firm_rep", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "cases.material_delete",
        "POST",
        only("done", "consumer"),
        params=lambda w: {"case_id": w.ids["draft"], "material_id": w.ids["draft_material"]},
    ),
    Case(
        "cases.submit",
        "POST",
        only("done", "consumer"),
        params=lambda w: {"case_id": w.ids["draft"]},
    ),
    Case(
        "cases.rules",
        "GET",
        only("ok", *ADMINS),
        params=lambda w: {"committee_id": w.ids["committee_a"]},
        label="own committee",
    ),
    Case(
        "cases.rules",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"committee_id": w.ids["committee_b"]},
        label="other committee",
    ),
    Case(
        "cases.rules",
        "POST",
        only("bad", *ADMINS),
        params=lambda w: {"committee_id": w.ids["committee_a"]},
    ),
    Case(
        "meetings.list",
        "GET",
        logged_in("ok"),
        params=lambda w: {"case_id": w.ids["case"]},
        label="whoever sees the case sees when its sessions are",
    ),
    Case(
        "meetings.list",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"case_id": w.ids["other_case"]},
        label="someone else's case",
    ),
    Case(
        "meetings.list",
        "POST",
        only("bad", "mediator"),
        params=lambda w: {"case_id": w.ids["case"]},
        label="only the case's mediator schedules",
    ),
    Case(
        "meetings.room",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="the parties and the mediator, not the committee's staff",
    ),
    Case(
        "meetings.ice_servers",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="TURN credentials only for the people who may join",
    ),
    Case(
        "meetings.minutes",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="whoever may see the session (the draft only its mediator)",
    ),
    Case(
        "meetings.minutes_text",
        "GET",
        only("ok", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"], "version": 1},
        label="a draft's text: only the mediator",
    ),
    Case(
        "meetings.minutes_save",
        "POST",
        only("bad", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="only the mediator writes; no text is refused",
    ),
    Case(
        "meetings.minutes_present",
        "POST",
        only("bad", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="only the mediator; no text is refused",
    ),
    Case(
        "meetings.minutes_confirm",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="only the parties; no version is refused",
    ),
    Case(
        "meetings.minutes_decline",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="only the parties; no version is refused",
    ),
    Case(
        "meetings.reschedule",
        "POST",
        only("done", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
    ),
    Case(
        "meetings.cancel",
        "POST",
        only("done", "mediator"),
        params=lambda w: {"meeting_id": w.ids["meeting"]},
        label="refused without a reason, back to the page",
    ),
    Case(
        "agreements.page",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator", *ADMINS),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the parties, the mediator and the staff read the agreement",
    ),
    Case(
        "agreements.page",
        "GET",
        only("ok", "mediator", *ADMINS),
        params=lambda w: {"case_id": w.ids["case"]},
        label="before it is drafted: the mediator (to start it) and the staff",
    ),
    Case(
        "agreements.page",
        "GET",
        only("404"),
        params=lambda w: {"case_id": w.ids["draft"]},
        label="a draft case has no agreement page, even for its staff",
    ),
    Case(
        "agreements.litigation",
        "GET",
        only("404"),
        params=lambda w: {"case_id": w.ids["draft"]},
        label="a draft is its filer's alone",
    ),
    Case(
        "agreements.start",
        "POST",
        only("done", "mediator"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="only the mediator; started already, so back to it",
    ),
    Case(
        "agreements.save",
        "POST",
        only("bad", "mediator"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="only the mediator; terms with no term are refused",
    ),
    Case(
        "agreements.comment",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the parties; an empty comment is refused",
    ),
    Case(
        "agreements.code",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the signing parties; refused while it is being drafted",
    ),
    Case(
        "agreements.sign",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the signing parties; no version is refused",
    ),
    Case(
        "agreements.version_pdf",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator", *ADMINS),
        params=lambda w: {"case_id": w.ids["agreed"], "version": 1},
    ),
    Case(
        "agreements.signed_pdf",
        "GET",
        only("404", "consumer", "firm_rep", "mediator", *ADMINS),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="not in effect: nothing signed to download",
    ),
    Case(
        "agreements.pay",
        "POST",
        only("bad", "firm_rep"),
        params=lambda w: {"case_id": w.ids["agreed"], "number": 1},
        label="the firm; refused before the agreement is in effect",
    ),
    Case(
        "agreements.answer",
        "POST",
        only("404", "consumer"),
        params=lambda w: {"case_id": w.ids["agreed"], "number": 1},
        label="the claimant; no such payment yet",
    ),
    Case(
        "agreements.open_signing",
        "POST",
        only("done", "mediator"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="only the mediator",
    ),
    Case(
        "agreements.judicial_apply",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the signing parties; refused before the agreement is in effect",
    ),
    Case(
        "agreements.judicial_decision",
        "POST",
        only("bad", "committee_admin"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the committee's staff; refused with nothing to answer",
    ),
    Case(
        "agreements.judicial_package",
        "GET",
        only("404", "consumer", "firm_rep", "mediator", *ADMINS),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="no application yet: no package",
    ),
    Case(
        "agreements.referral",
        "POST",
        only("bad", "committee_admin"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the committee's staff; an empty form is refused",
    ),
    Case(
        "agreements.referral_report",
        "POST",
        only("404", "committee_admin"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the committee's staff; no referral recorded",
    ),
    Case(
        "agreements.litigation",
        "GET",
        only("ok", "consumer", "firm_rep", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the parties, the mediator and the committee's staff",
    ),
    Case(
        "agreements.facts",
        "POST",
        only("bad", "mediator"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="only the mediator writes the facts; an empty record is refused",
    ),
    Case(
        "agreements.facts_confirm",
        "POST",
        only("bad", "consumer", "firm_rep"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the parties; nothing to confirm yet",
    ),
    Case(
        "agreements.transfer",
        "POST",
        only("bad", "mediator", "committee_admin"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="the mediator or the staff; refused while the case is in mediation",
    ),
    Case(
        "agreements.case_file",
        "GET",
        only("404"),
        params=lambda w: {"case_id": w.ids["agreed"]},
        label="no case file before mediation has failed",
    ),
    Case(
        "agreements.survey",
        "GET",
        only("ok"),
        params=lambda w: {"case_id": w.ids["case"]},
        label="nobody rates a case that is not closed",
    ),
    Case(
        "agreements.survey_answer",
        "POST",
        only("ok"),
        params=lambda w: {"case_id": w.ids["case"]},
        label="nobody rates a case that is not closed",
    ),
    Case("notify.centre", "GET", logged_in("ok")),
    Case("notify.badge", "GET", logged_in("ok")),
    Case(
        "notify.read",
        "POST",
        only("done", "consumer"),
        params=lambda w: {"notification_id": w.ids["notice"]},
    ),
    Case("notify.read_all", "POST", logged_in("done")),
    Case("analytics.dashboard", "GET", only("ok", *ADMINS)),
    Case("analytics.export", "GET", only("ok", *ADMINS)),
    Case("analytics.warnings", "GET", only("ok", *ADMINS)),
    Case("analytics.send_notice", "POST", only("bad", *ADMINS)),
    Case("analytics.notices", "GET", only("ok", "firm_rep", *ADMINS)),
    Case(
        "analytics.notice",
        "GET",
        only("ok", "firm_rep", *ADMINS),
        params=lambda w: {"notice_id": w.ids["risk_notice"]},
    ),
    Case(
        "analytics.notice",
        "POST",
        only("done", "firm_rep"),
        params=lambda w: {"notice_id": w.ids["risk_notice"]},
    ),
    Case(
        "likeness.compare",
        "GET",
        only("ok", "mediator", "committee_admin", "platform_admin"),
        params=lambda w: {"case_id": w.ids["case"]},
    ),
    Case(
        "likeness.compare",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"case_id": w.ids["other_case"]},
        label="someone else's case",
    ),
    Case(
        "likeness.compare",
        "GET",
        only("ok"),
        params=lambda w: {"case_id": w.ids["draft"]},
        label="a draft",
    ),
    Case("likeness.clusters", "GET", only("ok", *ADMINS)),
    Case("library.search", "GET", only("ok", "mediator", *ADMINS)),
    Case(
        "library.entry",
        "GET",
        only("ok", "mediator", *ADMINS),
        params=lambda w: {"entry_id": w.ids["library_entry"]},
    ),
    Case(
        "library.similar",
        "GET",
        only("ok", "mediator", *ADMINS),
        params=lambda w: {"case_id": w.ids["case"]},
        label="the mediator's case",
    ),
    Case(
        "library.similar",
        "GET",
        only("ok", "platform_admin"),
        params=lambda w: {"case_id": w.ids["other_case"]},
        label="someone else's case",
    ),
    Case("guidance.index", "GET", everyone("ok")),
    Case("workdays.calendar", "GET", only("ok", *ADMINS)),
    Case("workdays.calendar", "POST", only("bad", *ADMINS)),
    Case(
        "workdays.remove", "POST", only("done", *ADMINS), params=lambda w: {"day_id": w.ids["day"]}
    ),
    # Last: it ends the session.
    Case("accounts.logout", "POST", everyone("done")),
]

# Not pages: served by StaticFiles.
# The firm API's endpoints answer bearer tokens, not sessions: their own matrix is
# tests/api/test_access.py.
UNLISTED = {"static", *(e.name for e in ENDPOINTS)}


# On every answer, whoever asks: the browser's defences (portal.middleware).
SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "x-request-id",
)


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
        missing_headers = [h for h in SECURITY_HEADERS if h not in response.headers]
        if missing_headers:
            wrong.append(f"{case.method} {case.route}: no {missing_headers}")
        csp = response.headers.get("content-security-policy", "")
        if "'unsafe-inline'" in csp or "frame-ancestors 'none'" not in csp:
            wrong.append(f"{case.method} {case.route}: weak policy {csp}")
        if case.route == "accounts.preferences":
            # Undo the language switch so later pages stay comparable.
            await client.post(path, data={"csrf_token": token, "locale": "zh_CN"})
        if got != case.expect[who]:
            wrong.append(
                f"{case.method} {case.route} {case.label}: {got}, expected {case.expect[who]}"
            )
    assert not wrong, "\n".join(wrong)
