"""Data retention (both backends): each kind of record goes when its period is over and not
before; consumers whose cases ended long ago and who stopped logging in are erased; a dry run
changes nothing; the portal's loop sweeps by itself; the settings refuse unsafe periods; and a
person can download their own data from their account page."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from portal.accounts.models import Invitation, LoginThrottle, PhoneCode, User, UserSession
from portal.audit.models import AuditEvent
from portal.cases import service as cases
from portal.cases.models import Case
from portal.db import utcnow
from portal.notify.models import Notification
from portal.policy import Role
from portal.retention import sweep
from portal.settings import Settings
from tests.conftest import log_in, post_form
from tests.factories import (
    PASSWORD,
    PDF,
    Person,
    make_case,
    make_committee,
    make_firm,
    make_user,
    verify_phone,
)

YEAR = timedelta(days=365)


def _state(app: Any) -> Any:
    return app.starlette.state


async def _notification(db: Any, user_id: int, status: str, age: timedelta) -> int:
    row = Notification(
        user_id=user_id,
        channel="in_app" if status == "sent" else "email",
        title_msgid="x",
        body_msgid="x",
        status=status,
        created_at=utcnow() - age,
    )
    db.add(row)
    await db.flush()
    return row.id


async def _consumer_with_case(
    app: Any, phone: str, *, status: str, ended_ago: timedelta, login_ago: timedelta | None
) -> int:
    """A consumer created six years ago with one case in ``status`` since ``ended_ago``."""
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone=phone, name="赵" + phone[-4:])
    await verify_phone(app, person)
    case = await make_case(app, person, firm)
    now = utcnow()
    async with _state(app).db() as db:
        await db.execute(
            update(Case)
            .where(Case.id == case.id)
            .values(status=status, closed_at=now - ended_ago, updated_at=now - ended_ago)
        )
        await db.execute(
            update(User)
            .where(User.id == person.id)
            .values(
                created_at=now - 6 * YEAR,
                last_login_at=None if login_ago is None else now - login_ago,
            )
        )
        await db.commit()
    return person.id


async def test_each_record_goes_when_its_period_is_over(app: Any, settings: Settings) -> None:
    state = _state(app)
    await make_committee(app)
    staff = await make_user(app, Role.COMMITTEE_ADMIN, committee=await make_committee(app))
    now = utcnow()
    # Consumers: ended 6 years ago and gone since (erased); the same but logged in last month
    # (kept); a case still being handled (kept); a rejected filing of 6 years ago and no login
    # recorded (erased); an old mediator (staff are never erased by age).
    gone = await _consumer_with_case(
        app, "13900001001", status="closed", ended_ago=6 * YEAR, login_ago=6 * YEAR
    )
    back = await _consumer_with_case(
        app, "13900001002", status="closed", ended_ago=6 * YEAR, login_ago=timedelta(days=30)
    )
    busy = await _consumer_with_case(
        app, "13900001003", status="in_mediation", ended_ago=6 * YEAR, login_ago=6 * YEAR
    )
    quiet = await _consumer_with_case(
        app, "13900001004", status="rejected", ended_ago=6 * YEAR, login_ago=None
    )
    recent = await _consumer_with_case(
        app, "13900001005", status="closed", ended_ago=YEAR, login_ago=YEAR
    )
    async with state.db() as db:
        await db.execute(update(User).where(User.id == staff.id).values(created_at=now - 6 * YEAR))
        expected: dict[str, set[Any]] = {"gone": set(), "kept": set()}
        for age, where in ((timedelta(hours=3), "gone"), (timedelta(minutes=5), "kept")):
            session = UserSession(
                id=f"{where}-{staff.id}".ljust(64, "0"),
                user_id=staff.id,
                created_at=now - age,
                last_seen_at=now - age,
            )
            db.add(session)
            expected[where].add(("session", session.id))
        for age, where in ((timedelta(days=2), "gone"), (timedelta(minutes=-5), "kept")):
            code = PhoneCode(user_id=staff.id, code_digest="0" * 64, expires_at=now - age)
            db.add(code)
            await db.flush()
            expected[where].add(("code", code.id))
        db.add(LoginThrottle(key="ip:203.0.113.9", failures=3, last_failure_at=now - 2 * YEAR))
        db.add(LoginThrottle(key="ip:203.0.113.10", failures=3, last_failure_at=now))
        for age, where in ((3 * YEAR, "gone"), (timedelta(days=3), "kept")):
            invitation = Invitation(
                token_digest=f"{where}".ljust(64, "1"),
                role="mediator",
                invitee_name="张",
                committee_id=staff.user.committee_id,
                created_by_id=staff.id,
                created_at=now - age,
                expires_at=now - age + timedelta(days=7),
            )
            db.add(invitation)
            await db.flush()
            expected[where].add(("invitation", invitation.id))
        for status, age, where in (
            ("sent", 3 * YEAR, "gone"),
            ("failed", 3 * YEAR, "gone"),
            ("pending", 3 * YEAR, "kept"),  # never delivered yet: never deleted
            ("sent", YEAR, "kept"),
        ):
            expected[where].add(("notification", await _notification(db, staff.id, status, age)))
        await db.commit()

    async def present() -> set[Any]:
        async with state.db() as db:
            found = {("session", s) for s in await db.scalars(select(UserSession.id))}
            found |= {("code", c) for c in await db.scalars(select(PhoneCode.id))}
            found |= {("invitation", i) for i in await db.scalars(select(Invitation.id))}
            found |= {("notification", n) for n in await db.scalars(select(Notification.id))}
            found |= {("throttle", t) for t in await db.scalars(select(LoginThrottle.key))}
            found |= {("person", u.id) for u in await db.scalars(select(User)) if u.is_active}
            return found

    before = await present()
    assert expected["gone"] <= before and expected["kept"] <= before

    # A dry run says what is due and changes nothing.
    async with state.db() as db:
        due = await sweep(db, state.blobs, settings, dry_run=True)
    assert (due.sessions, due.phone_codes, due.throttles) == (1, 1, 1)
    assert (due.invitations, due.notifications) == (1, 2)
    assert due.persons_due == [gone, quiet]
    assert due.persons_erased == []
    assert await present() == before

    async with state.db() as db:
        done = await sweep(db, state.blobs, settings)
    assert done.persons_erased == [gone, quiet] and not done.persons_refused
    after = await present()
    assert not (expected["gone"] & after), expected["gone"] & after
    assert expected["kept"] <= after
    assert ("throttle", "ip:203.0.113.10") in after and ("throttle", "ip:203.0.113.9") not in after
    for person in (back, busy, recent, staff.id):
        assert ("person", person) in after
    async with state.db() as db:
        erased = await db.get(User, gone)
        assert erased is not None and erased.display_name == "已注销用户"
        case = await db.scalar(select(Case).where(Case.filer_id == gone))
        assert case is not None and case.claimant_name_enc is None and case.status == "closed"
        events = list(
            await db.scalars(select(AuditEvent).where(AuditEvent.action == "retention.swept"))
        )
        assert len(events) == 1
        detail = events[0].detail
        assert detail["sessions"] == 1 and detail["notifications"] == 2
        assert detail["persons_due"] == 2
        erasures = await db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "person.erased",
                AuditEvent.detail["reason"].as_string() == "retention",
            )
        )
        assert erasures == 2

    # Nothing more is due: a second sweep removes nothing and records nothing.
    async with state.db() as db:
        again = await sweep(db, state.blobs, settings)
    assert again.removed == 0
    # Automatic erasure off: the consumer who came back and left again stays.
    async with state.db() as db:
        await db.execute(update(User).where(User.id == back).values(last_login_at=now - 6 * YEAR))
        await db.commit()
        off = await sweep(db, state.blobs, replace(settings, person_retention_days=0))
    assert off.persons_erased == []
    async with state.db() as db:
        assert (await db.get(User, back)).is_active  # type: ignore[union-attr]


async def test_a_case_filed_again_keeps_the_person(app: Any, settings: Settings) -> None:
    state = _state(app)
    await make_committee(app)
    person = await _consumer_with_case(
        app, "13900001011", status="closed", ended_ago=6 * YEAR, login_ago=6 * YEAR
    )
    async with state.db() as db:
        due = await sweep(db, state.blobs, settings, dry_run=True)
    assert due.persons_due == [person]
    # Before the sweep runs, the person files again (their login being old, e.g. by an agent's
    # hand-over); the new case is being handled, so nothing of theirs goes.
    async with state.db() as db:
        user = await db.get(User, person)
        assert user is not None
    await make_case(app, Person(user=user, login="13900001011"), await make_firm(app))
    async with state.db() as db:
        done = await sweep(db, state.blobs, settings)
    assert done.persons_erased == [] and done.persons_due == []
    async with state.db() as db:
        assert (await db.get(User, person)).is_active  # type: ignore[union-attr]


async def test_login_records_when_and_the_loop_sweeps(app: Any, client: httpx.AsyncClient) -> None:
    state = _state(app)
    person = await make_user(app, Role.CONSUMER, phone="13900001021")
    await log_in(client, "13900001021", PASSWORD)
    async with state.db() as db:
        user = await db.get(User, person.id)
        assert user is not None and user.last_login_at is not None
        assert utcnow() - user.last_login_at < timedelta(minutes=1)
        db.add(
            UserSession(
                id="s".ljust(64, "0"),
                user_id=person.id,
                created_at=utcnow() - timedelta(days=3),
                last_seen_at=utcnow() - timedelta(days=3),
            )
        )
        await db.commit()
    loop = state.retention
    assert loop.running
    loop.wake()  # cuts the first minute's wait short
    for _ in range(100):
        async with state.db() as db:
            if await db.get(UserSession, "s".ljust(64, "0")) is None:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the retention loop did not sweep")
    # The session of the login just made is kept.
    async with state.db() as db:
        assert (
            await db.scalar(
                select(func.count())
                .select_from(UserSession)
                .where(UserSession.user_id == person.id)
            )
            == 1
        )


def test_settings_refuse_unsafe_periods(tmp_path: Path) -> None:
    base = {"SECRET_KEY": "k" * 40, "DATA_KEY": "d" * 40, "VAR_DIR": str(tmp_path)}
    assert Settings.from_env(base).person_retention_days == 1825
    assert Settings.from_env(base).notification_retention_days == 730
    assert Settings.from_env({**base, "PERSON_RETENTION_DAYS": "0"}).person_retention_days == 0
    with pytest.raises(ValueError, match="PERSON_RETENTION_DAYS"):
        Settings.from_env({**base, "PERSON_RETENTION_DAYS": "100"})
    with pytest.raises(ValueError, match="NOTIFICATION_RETENTION_DAYS"):
        Settings.from_env({**base, "NOTIFICATION_RETENTION_DAYS": "30"})


async def test_a_person_downloads_their_own_data(app: Any, client: httpx.AsyncClient) -> None:
    state = _state(app)
    committee = await make_committee(app)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone="13900001031", name="钱多多")
    other = await make_user(app, Role.CONSUMER, phone="13900001032", name="孙少少")
    await verify_phone(app, person)
    await verify_phone(app, other)
    case = await make_case(app, person, firm, name="钱多多", facts="信用卡年费未经同意扣收。")
    await make_case(app, other, firm, name="孙少少", facts="别人的案件。")
    async with state.db() as db:
        user = await db.get(User, person.id)
        row = await db.get(Case, case.id)
        assert user is not None and row is not None
        blob = state.blobs.put_bytes(PDF + b"receipt of qian")
        await cases.add_material(
            db,
            row,
            user,
            kind="other",
            filename="收据.pdf",
            content_type="application/pdf",
            size=blob.size,
            sha256=blob.sha256,
        )
        # The firm's item kept for the mediator: not the claimant's to see, nor to export.
        rep = await make_user(app, Role.FIRM_REP, firm=firm)
        rep_user = await db.get(User, rep.id)
        assert rep_user is not None
        hidden = state.blobs.put_bytes(PDF + b"firm internal memo")
        await cases.add_material(
            db,
            row,
            rep_user,
            kind="other",
            filename="内部说明.pdf",
            content_type="application/pdf",
            size=hidden.size,
            sha256=hidden.sha256,
            visibility="mediator",
            party="respondent",
        )
        await db.commit()

    await log_in(client, "13900001031", PASSWORD)
    profile = await client.get("/account")
    assert 'data-testid="my-data"' in profile.text and "下载我的数据" in profile.text
    page = await client.get("/account/data")
    assert page.status_code == 200 and "身份证号码" in page.text
    assert "hx-post" not in page.text.split('data-testid="export-form"')[1].split(">")[0]

    wrong = await post_form(client, "/account/data", {"current": "not-my-password"})
    assert wrong.status_code == 400 and "当前密码错误" in wrong.text
    empty = await post_form(client, "/account/data", {"current": ""})
    assert empty.status_code == 400
    # Guessing is throttled like logging in: after a few wrong tries even the right one waits.
    for _ in range(4):
        await post_form(client, "/account/data", {"current": "still-not-it"})
    blocked = await post_form(client, "/account/data", {"current": PASSWORD})
    assert blocked.status_code == 400 and "失败次数过多" in blocked.text
    async with state.db() as db:  # (the wait, passed)
        await db.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == f"reauth:{person.id}")
            .values(blocked_until=None, last_failure_at=utcnow() - timedelta(days=2))
        )
        await db.commit()

    answer = await post_form(client, "/account/data", {"current": PASSWORD})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-disposition"].startswith('attachment; filename="jiefen-my-data-')
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        data = json.loads(archive.read("person.json"))
        assert data["account"]["phone"] == "13900001031"
        assert [c["number"] for c in data["cases"]] == [case.number]
        assert data["cases"][0]["claimant"]["name"] == "钱多多"
        assert "别人的案件" not in json.dumps(data, ensure_ascii=False)
        assert "内部说明" not in json.dumps(data, ensure_ascii=False)
        assert hidden.sha256 not in json.dumps(data)
        uploads = [n for n in archive.namelist() if n.startswith("files/")]
        # The two materials of the filing and the receipt added later, each as uploaded.
        assert len(uploads) == 3 and uploads[-1].endswith("收据.pdf")
        assert archive.read(uploads[-1]) == PDF + b"receipt of qian"
    async with state.db() as db:
        events = list(
            await db.scalars(
                select(AuditEvent).where(AuditEvent.action == "personal_data.exported")
            )
        )
    assert len(events) == 1 and events[0].actor_id == person.id
    assert events[0].detail == {"cases": 1, "files": 3}
