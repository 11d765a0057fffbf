"""Invitations: created by administrators, used once, expiring, revocable."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from portal.accounts.models import Invitation, User
from portal.db import utcnow
from portal.policy import Role
from tests.conftest import log_in, post_form
from tests.factories import PASSWORD, make_committee, make_firm, make_user


async def invite(client: httpx.AsyncClient, **data: Any) -> str:
    response = await post_form(client, "/admin/invitations", data)
    assert response.status_code == 200, response.text
    found = re.search(
        r'data-testid="invitation-link"|value="(http://testserver/invite/[^"]+)"', response.text
    )
    link = re.search(r'value="http://testserver(/invite/[^"]+)"', response.text)
    assert found and link
    return link.group(1)


async def test_firm_rep_invited_accepts_and_is_bound_to_the_firm(
    app: Any, client: httpx.AsyncClient
) -> None:
    admin = await make_user(app, Role.COMMITTEE_ADMIN)
    firm = await make_firm(app)
    await log_in(client, admin.login, admin.password)
    path = await invite(client, invitee_name="赵经理", role="firm_rep", firm_id=str(firm.id))
    await post_form(client, "/accounts/logout")

    page = await client.get(path)
    assert page.status_code == 200 and firm.name in page.text and "赵经理" in page.text
    accepted = await post_form(
        client, path, {"display_name": "赵经理", "email": "zhao@firm.example", "password": PASSWORD}
    )
    assert accepted.status_code == 303
    async with app.starlette.state.db() as db:
        user = await db.scalar(select(User).where(User.display_name == "赵经理"))
    assert user is not None and user.role == "firm_rep" and user.firm_id == firm.id

    await post_form(client, "/accounts/logout")
    again = await client.get(path)
    assert again.status_code == 410


async def test_committee_admin_cannot_invite_to_another_committee_or_platform(
    app: Any, client: httpx.AsyncClient
) -> None:
    admin = await make_user(app, Role.COMMITTEE_ADMIN)
    other = await make_committee(app)
    await log_in(client, admin.login, admin.password)
    response = await post_form(
        client,
        "/admin/invitations",
        {"invitee_name": "x", "role": "mediator", "committee_id": str(other.id)},
    )
    assert response.status_code == 404
    response = await post_form(
        client, "/admin/invitations", {"invitee_name": "x", "role": "platform_admin"}
    )
    assert response.status_code == 404
    response = await post_form(
        client, "/admin/invitations", {"invitee_name": "x", "role": "mediator"}
    )
    assert response.status_code == 400
    async with app.starlette.state.db() as db:
        assert list(await db.scalars(select(Invitation))) == []


async def test_expired_and_revoked_invitations_cannot_be_used(
    app: Any, client: httpx.AsyncClient
) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    committee = await make_committee(app)
    await log_in(client, admin.login, admin.password)
    expired = await invite(
        client, invitee_name="甲", role="mediator", committee_id=str(committee.id)
    )
    revoked = await invite(
        client, invitee_name="乙", role="committee_admin", committee_id=str(committee.id)
    )
    async with app.starlette.state.db() as db:
        first = await db.scalar(select(Invitation).where(Invitation.invitee_name == "甲"))
        second = await db.scalar(select(Invitation).where(Invitation.invitee_name == "乙"))
        assert first and second
        await db.execute(
            update(Invitation)
            .where(Invitation.id == first.id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await db.commit()
    assert (await post_form(client, f"/admin/invitations/{second.id}/revoke")).status_code == 303
    await post_form(client, "/accounts/logout")
    for path in (expired, revoked):
        response = await client.get(path)
        assert response.status_code == 410
        refused = await post_form(
            client, path, {"display_name": "丙", "email": "c@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 410
    assert (await client.get("/invite/not-a-real-token")).status_code == 404
    async with app.starlette.state.db() as db:
        assert await db.scalar(select(User).where(User.display_name == "丙")) is None
