"""The firm API's access matrix: every endpoint × a token of the case's firm, of another firm,
revoked, expired, lacking the endpoint's permission, and none. The matrix must name every
endpoint: add a row when you add one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from portal.accounts.models import User
from portal.api import service as api
from portal.api.models import ApiToken
from portal.api.views import ENDPOINTS, PREFIX
from portal.cases import service as cases
from portal.cases.models import Case
from portal.db import utcnow
from portal.orgs.models import Firm
from portal.policy import Role
from tests.agreements.test_service import build, make_effective, terms
from tests.api.test_api import token_for
from tests.factories import PDF, make_case, make_user

KINDS = ("own", "other_firm", "revoked", "expired", "no_scope", "none")


@dataclass(frozen=True)
class Row:
    name: str
    path: Callable[[dict[str, int]], str]
    own: int  # the own firm's token with every permission
    other_firm: int = 404
    request: Callable[[int], dict[str, Any]] = lambda amount: {}


ROWS = [
    Row("api.cases", lambda c: "/cases", 200, other_firm=200),
    Row("api.case", lambda c: f"/cases/{c['open']}", 200),
    Row(
        "api.respond",
        lambda c: f"/cases/{c['open']}/response",
        200,
        request=lambda a: {"json": {"kind": "agree"}},
    ),
    Row(
        "api.propose",
        lambda c: f"/cases/{c['open']}/proposals",
        201,
        request=lambda a: {"json": {"amount_fen": 100, "terms": "退还"}},
    ),
    Row(
        "api.evidence",
        lambda c: f"/cases/{c['open']}/evidence",
        201,
        request=lambda a: {"files": [("file", ("回单.pdf", PDF, "application/pdf"))]},
    ),
    Row("api.agreement", lambda c: f"/cases/{c['agreed']}/agreement", 200),
    Row(
        "api.payment",
        lambda c: f"/cases/{c['agreed']}/agreement/payments/1",
        200,
        request=lambda a: {"json": {"amount_fen": a, "paid_on": utcnow().date().isoformat()}},
    ),
]


def test_matrix_names_every_endpoint() -> None:
    assert sorted(r.name for r in ROWS) == sorted(e.name for e in ENDPOINTS)


async def test_api_access_matrix(app: Any) -> None:
    w = await build(app)
    await make_effective(app, w, terms(amount_fen=200_000, parts=2))
    other_rep = await make_user(app, Role.FIRM_REP)
    async with app.starlette.state.db() as db:
        firm = await db.get(Firm, (await db.get(Case, w.case_id)).respondent_firm_id)  # type: ignore[union-attr]
    still_open = await make_case(
        app, w.claimant, firm, status="assigned", mediator_id=w.mediator.id
    )
    async with app.starlette.state.db() as db:
        mediator = await db.get(User, w.mediator.id)
        case = await db.get(Case, still_open.id)
        assert mediator is not None and case is not None
        await cases.apply_transition(db, case, mediator, "start_mediation")
    ids = {"open": still_open.id, "agreed": w.case_id}
    tokens = {
        "own": await token_for(app, w.rep),
        "other_firm": await token_for(app, other_rep),
        "revoked": await token_for(app, w.rep),
        "expired": await token_for(app, w.rep),
        "none": "",
    }
    async with app.starlette.state.db() as db:
        for kind, when in (("revoked", "revoked_at"), ("expired", "expires_at")):
            await db.execute(
                update(ApiToken)
                .where(ApiToken.digest == api.digest(tokens[kind]))
                .values({when: utcnow() - timedelta(seconds=1)})
            )
        await db.commit()
    by_name = {e.name: e for e in ENDPOINTS}
    transport = httpx.ASGITransport(app=app)
    wrong = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        agreement = (
            await http.get(
                f"{PREFIX}/cases/{w.case_id}/agreement",
                headers={"Authorization": f"Bearer {tokens['own']}"},
            )
        ).json()
        amount = agreement["instalments"][0]["amount_fen"]
        for row in ROWS:
            endpoint = by_name[row.name]
            # A token of the firm with every permission but this endpoint's.
            others = [s for s in api.SCOPES if s != endpoint.scope]
            lacking = await token_for(app, w.rep, others)
            expected = {
                "own": row.own,
                "other_firm": row.other_firm,
                "revoked": 401,
                "expired": 401,
                "no_scope": 403,
                "none": 401,
            }
            # The refusals first, so that the own token's call (which changes things) is last.
            for kind in sorted(KINDS, key=lambda k: k == "own"):
                secret = lacking if kind == "no_scope" else tokens[kind]
                headers = {"Authorization": f"Bearer {secret}"} if secret else {}
                response = await http.request(
                    endpoint.method,
                    PREFIX + row.path(ids),
                    headers=headers,
                    **row.request(amount),
                )
                if response.status_code != expected[kind]:
                    wrong.append(
                        f"{row.name} {kind}: {response.status_code}, expected {expected[kind]}"
                        f" ({response.text[:120]})"
                    )
                if kind == "other_firm" and row.name == "api.cases":
                    assert response.json()["items"] == []  # nothing of the other firm's
    assert not wrong, "\n".join(wrong)
