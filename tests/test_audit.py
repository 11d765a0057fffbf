"""The audit trail (both backends): who saw a case's identity data, digests of the trail in the
evidence log that expose any later change, and retention of at least six months."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from portal.audit.digest import digest_all, digest_pending, purge_expired, verify_digests
from portal.audit.models import AuditDigest, AuditEvent
from portal.audit.service import PERSONAL_DATA_VIEWED, record
from portal.cases.models import Case
from portal.db import utcnow
from portal.evidence import log
from portal.evidence.integrity import verify_log
from portal.evidence.models import LogLeaf
from portal.policy import Role
from portal.settings import Settings
from tests.conftest import log_in
from tests.factories import (
    PASSWORD,
    VALID_ID,
    make_case,
    make_committee,
    make_firm,
    make_user,
    verify_phone,
)

PHONES = itertools.count(1)


async def _world(app: Any) -> dict[str, Any]:
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee, name="王主任")
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="李调解员")
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    consumer = await make_user(app, Role.CONSUMER, phone=f"1390000{next(PHONES):04d}")
    await verify_phone(app, consumer)
    case: Case = await make_case(app, consumer, firm, status="assigned", mediator_id=None)
    return {
        "admin": admin,
        "mediator": mediator,
        "rep": rep,
        "consumer": consumer,
        "case": case,
    }


async def _views(app: Any, case_id: int) -> list[AuditEvent]:
    async with app.starlette.state.db() as db:
        return list(
            await db.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.action == PERSONAL_DATA_VIEWED,
                    AuditEvent.object_id == str(case_id),
                )
                .order_by(AuditEvent.id)
            )
        )


async def test_who_saw_a_cases_identity_data_is_recorded(
    app: Any, client: httpx.AsyncClient
) -> None:
    world = await _world(app)
    case = world["case"]
    detail, reveal = f"/cases/{case.id}", f"/cases/{case.id}/identity"

    # The filer sees his own data: nothing to record.
    await log_in(client, world["consumer"].login, PASSWORD)
    response = await client.get(reveal)
    assert response.status_code == 200 and VALID_ID in response.text
    assert await _views(app, case.id) == []
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})

    # The firm's representative may not see it at all.
    await log_in(client, world["rep"].login, PASSWORD)
    assert (await client.get(reveal)).status_code == 404
    assert await _views(app, case.id) == []
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})

    # The mediator: the case page (name, masked numbers) and, on request, the full numbers.
    await log_in(client, world["mediator"].login, PASSWORD)
    page = await client.get(detail)
    assert page.status_code == 200 and VALID_ID not in page.text
    assert 'data-testid="reveal-identity"' in page.text
    # The page's 20-second refresh (htmx) is not another viewing.
    assert (await client.get(detail, headers={"HX-Request": "true"})).status_code == 200
    shown = await client.get(reveal, headers={"HX-Request": "true"})
    assert shown.status_code == 200 and VALID_ID in shown.text
    assert "<html" not in shown.text  # the fragment only
    assert 'data-testid="identity-views"' not in shown.text  # the committee's to see
    views = await _views(app, case.id)
    assert [(v.actor_id, v.detail["via"], v.detail["fields"][:2]) for v in views] == [
        (world["mediator"].user.id, "case_page", ["name"]),
        (world["mediator"].user.id, "reveal", ["name", "id_number"]),
    ]
    for view in views:  # field names, never the values
        assert VALID_ID not in str(view.detail)
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})

    # The committee's administrator sees who looked.
    await log_in(client, world["admin"].login, PASSWORD)
    shown = await client.get(reveal)
    assert shown.status_code == 200 and "<html" in shown.text
    assert 'data-testid="identity-views"' in shown.text and "李调解员" in shown.text
    assert len(await _views(app, case.id)) == 3
    # Someone else's case answers 404 and records nothing.
    assert (await client.get("/cases/999999/identity")).status_code == 404
    assert len(await _views(app, case.id)) == 3


async def _token(client: httpx.AsyncClient) -> str:
    from tests.conftest import csrf_token

    return await csrf_token(client)


async def _trail(app: Any, n: int) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    async with app.starlette.state.db() as db:
        for i in range(n):
            record(db, admin.user.id, "firm.updated", "firm", i, fields=["name"])
        await db.commit()


async def test_digests_enter_the_evidence_log_and_expose_later_changes(app: Any) -> None:
    state = app.starlette.state
    await _trail(app, 30)
    async with state.db() as db:
        await digest_all(db, limit=12)
        assert (
            await db.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.digest_id.is_(None))
            )
            == 0
        )
        digests = list(await db.scalars(select(AuditDigest).order_by(AuditDigest.id)))
        assert sum(d.count for d in digests) == await db.scalar(
            select(func.count()).select_from(AuditEvent)
        )
        assert len(digests) >= 3
        await log.integrate_all(db)
        leaves = list(await db.scalars(select(LogLeaf).where(LogLeaf.type == "audit.digest")))
        assert len(leaves) == len(digests)
        assert (await verify_log(db, state.blobs, state.log_key)).ok
        check = await verify_digests(db)
        assert check.ok and check.digests == len(digests) and check.undigested == 0, check

        victim = await db.scalar(
            select(AuditEvent).where(AuditEvent.digest_id == digests[1].id).limit(1)
        )
        assert victim is not None
        original = dict(victim.detail)

        # An edited event...
        await db.execute(
            update(AuditEvent).where(AuditEvent.id == victim.id).values(detail={"fields": []})
        )
        await db.commit()
        check = await verify_digests(db)
        assert not check.ok and f"audit digest {digests[1].id}" in check.problem
        await db.execute(
            update(AuditEvent).where(AuditEvent.id == victim.id).values(detail=original)
        )
        await db.commit()
        assert (await verify_digests(db)).ok

        # ...a deleted one...
        await db.execute(delete(AuditEvent).where(AuditEvent.id == victim.id))
        await db.commit()
        check = await verify_digests(db)
        assert not check.ok and "changed, removed or added" in check.problem

        # ...and a digest rewritten to match no longer matches its leaf.
        await db.execute(
            update(AuditDigest).where(AuditDigest.id == digests[1].id).values(count=-1)
        )
        await db.commit()
        check = await verify_digests(db)
        assert not check.ok and "differs from its evidence-log leaf" in check.problem


async def test_concurrent_digests_cover_each_event_once(app: Any) -> None:
    state = app.starlette.state
    await _trail(app, 40)

    async def worker() -> None:
        async with state.db() as db:
            for _ in range(10):
                await digest_pending(db, limit=5)

    await asyncio.gather(worker(), worker(), worker())
    async with state.db() as db:
        await digest_all(db)
        check = await verify_digests(db)
        assert check.ok, check
        total = await db.scalar(select(func.count()).select_from(AuditEvent))
        assert check.events == total and check.undigested == 0


async def test_the_trail_is_kept_six_months_at_least(app: Any, tmp_path: Path) -> None:
    state = app.starlette.state
    await _trail(app, 5)
    async with state.db() as db:
        old = utcnow() - timedelta(days=200)
        await db.execute(update(AuditEvent).values(created_at=old))
        await db.commit()
        await digest_all(db)
        await _trail(app, 2)  # recent ones, in a later digest
        await digest_all(db)
        assert await purge_expired(db, retention_days=365) == 0
        # A shorter period than six months counts as six months: 200 days old goes.
        deleted = await purge_expired(db, retention_days=30)
        assert deleted == await db.scalar(
            select(func.sum(AuditDigest.count)).where(AuditDigest.purged_at.is_not(None))
        )
        assert deleted >= 5
        left = await db.scalar(select(func.count()).select_from(AuditEvent))
        assert left is not None and left >= 2
        check = await verify_digests(db)
        assert check.ok and check.purged == deleted and check.events == left, check
    with pytest.raises(ValueError, match="at least 183"):
        Settings.from_env({"AUDIT_RETENTION_DAYS": "90", "VAR_DIR": str(tmp_path)})


async def test_agreement_pages_files_and_the_api_record_who_saw_the_claimant(
    app: Any, client: httpx.AsyncClient
) -> None:
    """The agreement, its PDFs and the firm API's case name the claimant too: each view by
    someone other than the claimant is on the trail (the page's htmx refresh is not)."""
    from tests.agreements.test_service import build, make_effective, terms
    from tests.api.test_api import bearer, token_for

    w = await build(app)
    await make_effective(app, w, terms())
    page, pdf = f"/cases/{w.case_id}/agreement", f"/cases/{w.case_id}/agreement/signed.pdf"

    await log_in(client, w.claimant.login, PASSWORD)
    assert (await client.get(page)).status_code == 200
    assert (await client.get(pdf)).status_code == 200
    assert await _views(app, w.case_id) == []  # one's own data
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})

    await log_in(client, w.mediator.login, PASSWORD)
    assert (await client.get(page)).status_code == 200
    assert (await client.get(page, headers={"HX-Request": "true"})).status_code == 200
    assert (await client.get(pdf)).status_code == 200
    await client.post("/accounts/logout", data={"csrf_token": await _token(client)})

    secret = await token_for(app, w.rep)
    api = await client.get(f"/api/v1/cases/{w.case_id}", headers=bearer(secret))
    assert api.status_code == 200 and api.json()["claimant"] != "张三"  # masked
    # Another firm's token: 404 and nothing recorded.
    other = await token_for(app, w.other_rep)
    missing = await client.get(f"/api/v1/cases/{w.case_id}", headers=bearer(other))
    assert missing.status_code == 404

    views = await _views(app, w.case_id)
    assert [(v.actor_id, v.detail["via"], v.detail["fields"]) for v in views] == [
        (w.mediator.id, "agreement_page", ["name", "id_number_masked"]),
        (w.mediator.id, "signed_agreement_pdf", ["name", "id_number_masked"]),
        (w.rep.id, "api", ["name_masked"]),
    ]
