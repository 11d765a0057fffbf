"""Settlement agreements, service level, on both databases: drafting and versions, comments,
signing with password, code and name, voiding on edit, taking effect, the signature's leaf
checked by the verifier against the PDF, and fulfilment."""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pypdf import PdfReader
from sqlalchemy import select, update

from portal.accounts.models import User
from portal.accounts.service import identity_of
from portal.agreements import judicial, litigation, survey
from portal.agreements import service as agreements
from portal.agreements.models import (
    Agreement,
    AgreementSignature,
    AgreementVersion,
    InstalmentState,
)
from portal.agreements.policy import AgreementAccess, SurveyAccess
from portal.agreements.reminders import send_fulfilment_reminders
from portal.agreements.terms import Payment, Terms, check_terms
from portal.cases.models import Case, CaseEvent, CaseMaterial
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence import log
from portal.evidence.integrity import verify_log
from portal.evidence.policy import Item
from portal.evidence.verify.receipt import dump_receipt, verify_receipt
from portal.notify.models import Notification
from portal.policy import Role
from tests.factories import Person, make_case, make_committee, make_firm, make_user, verify_phone

T = TypeVar("T")


@dataclass
class World:
    mediator: Person
    claimant: Person
    rep: Person
    other_rep: Person
    stranger: Person
    case_id: int


async def build(app: Any) -> World:
    committee = await make_committee(app)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="王调解员")
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm, name="李经理")
    other_rep = await make_user(app, Role.FIRM_REP, name="别家代表")
    claimant = await make_user(app, Role.CONSUMER, phone="13912340001", name="张三")
    stranger = await make_user(app, Role.CONSUMER, phone="13912340002", name="路人")
    await verify_phone(app, claimant)
    case = await make_case(
        app, claimant, firm, status="assigned", mediator_id=mediator.id, category="credit_card"
    )
    async with app.starlette.state.db() as db:
        from portal.cases import service as cases

        loaded = await db.get(Case, case.id)
        user = await db.get(User, mediator.id)
        assert loaded is not None and user is not None
        await cases.apply_transition(db, loaded, user, "start_mediation")
    return World(mediator, claimant, rep, other_rep, stranger, case.id)


async def call(app: Any, who: Person, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
    """Run a service function as ``who``, with the access the policy gives them, in a fresh
    session (so every call sees only what earlier ones committed)."""
    state = app.starlette.state
    async with state.db() as db:
        user = await db.get(User, who.id)
        assert user is not None
        found = await agreements.access(db, kw.pop("case_id"))
        return await fn(db, found, user, *args, **kw)


async def permits(app: Any, who: Person, case_id: int, permission: str) -> bool:
    state = app.starlette.state
    async with state.db() as db:
        user = await db.get(User, who.id)
        found = await agreements.access(db, case_id)
        return bool(state.policy.permits(identity_of(user), permission, found))


async def last_code(app: Any, person: Person) -> str:
    async with app.starlette.state.db() as db:
        row = await db.scalar(
            select(Notification)
            .where(Notification.user_id == person.id, Notification.body_msgid.contains("sign"))
            .where(Notification.channel.in_(["sms", "email"]))
            .order_by(Notification.id.desc())
            .limit(1)
        )
    assert row is not None
    return str(row.params["code"])


def terms(amount_fen: int = 1_234_567, parts: int = 1) -> Terms:
    today = utcnow().date()
    each = amount_fen // parts
    schedule = [Payment(each, today + timedelta(days=10 * (n + 1))) for n in range(parts)]
    schedule[-1] = Payment(amount_fen - each * (parts - 1), schedule[-1].due)
    return Terms(refund_fen=amount_fen, payments=tuple(schedule), withdraw_complaints=True)


async def test_terms_are_checked_field_by_field() -> None:
    today = date(2026, 12, 3)
    good = check_terms(
        {"refund": "1,000", "compensation": "234.5", "apology": "on", "other": "删除不良征信记录"},
        [("600", "2026-12-20"), ("634.50", "2027-01-20")],
        today,
    )
    assert good.total_fen == 123_450 and [p.amount_fen for p in good.payments] == [60_000, 63_450]
    for form, payments, field in [
        ({"refund": "abc"}, [], "refund"),
        ({"refund": "100"}, [], "payments"),
        ({"refund": "100"}, [("90", "2026-12-20")], "payments"),  # does not add up
        ({"refund": "100"}, [("100", "2026-11-01")], "payment_due_1"),  # in the past
        ({"refund": "100"}, [("50", "2027-01-02"), ("50", "2027-01-01")], "payment_due_2"),
        ({"refund": "100"}, [("100", "明天")], "payment_due_1"),
        ({}, [], "refund"),  # no term at all
    ]:
        with pytest.raises(DomainError) as refused:
            check_terms(form, payments, today)
        assert refused.value.field == field, (form, payments)


async def test_drafting_signing_voiding_and_taking_effect(app: Any, tmp_path: Path) -> None:
    state = app.starlette.state
    w = await build(app)
    cid = w.case_id
    vault, settings = state.vault, state.settings

    async def start(db: Any, found: AgreementAccess, user: User) -> Any:
        return await agreements.start(db, vault, found, user)

    async def save(db: Any, found: AgreementAccess, user: User, t: Terms) -> Any:
        return await agreements.save_version(db, vault, found, user, t, "按调解结果")

    async def send(db: Any, found: AgreementAccess, user: User) -> str:
        return await agreements.send_code(db, settings, vault, found, user)

    async def sign(db: Any, found: AgreementAccess, user: User, **kw: Any) -> Any:
        return await agreements.sign(db, settings, found, user, **kw)

    # Before it exists only the mediator (and the committee) may see it.
    assert not await permits(app, w.claimant, cid, "view")
    assert await permits(app, w.mediator, cid, "draft")
    agreement = await call(app, w.mediator, start, case_id=cid)
    assert agreement.current_version == 1
    for person, allowed in [
        (w.claimant, {"view", "comment", "sign"}),
        (w.rep, {"view", "comment", "sign"}),
        (w.other_rep, set()),
        (w.stranger, set()),
        (w.mediator, {"view", "draft"}),
    ]:
        for permission in ("view", "comment", "sign", "draft"):
            assert await permits(app, person, cid, permission) == (permission in allowed)

    v2 = await call(app, w.mediator, save, terms(), case_id=cid)
    assert v2.number == 2 and "人民币12,345.67元" in "".join(v2.clauses_zh)
    assert "CNY 12,345.67" in "".join(v2.clauses_en)
    await call(app, w.claimant, agreements.add_comment, 2, "请写明退款到账账户", case_id=cid)
    with pytest.raises(DomainError):
        await call(app, w.claimant, agreements.add_comment, 2, "   ", case_id=cid)
    with pytest.raises(NotFound):
        await call(app, w.claimant, agreements.add_comment, 9, "没有这一版", case_id=cid)
    # Not up for signature yet.
    with pytest.raises(DomainError):
        await call(app, w.claimant, send, case_id=cid)
    await call(app, w.mediator, agreements.open_signing, case_id=cid)

    # Someone who is not a signing party is refused.
    with pytest.raises(DomainError):
        await call(app, w.other_rep, send, case_id=cid)
    assert await call(app, w.claimant, send, case_id=cid) == "sms"
    code = await last_code(app, w.claimant)
    password = w.claimant.password
    # A superseded version, a wrong name: refused, nothing signed.
    with pytest.raises(DomainError):
        await call(
            app,
            w.claimant,
            sign,
            version_number=1,
            password=password,
            code=code,
            typed_name="张三",
            case_id=cid,
        )
    with pytest.raises(DomainError) as refused:
        await call(
            app,
            w.claimant,
            sign,
            version_number=2,
            password=password,
            code=code,
            typed_name="张四",
            case_id=cid,
        )
    assert refused.value.field == "typed_name"
    for junk in ("<script>", "M10 10 L999 10", "L1 1 M2 2"):
        with pytest.raises(DomainError) as refused:
            await call(
                app,
                w.claimant,
                sign,
                version_number=2,
                password=password,
                code=code,
                typed_name="张三",
                drawn=junk,
                case_id=cid,
            )
        assert refused.value.field == "drawn"
    first = await call(
        app,
        w.claimant,
        sign,
        version_number=2,
        password=password,
        code=code,
        drawn="M20 60 L80 30 L140 70 M200 50 L260 40",
        typed_name="张 三",
        case_id=cid,
    )
    assert first.pdf_sha256 == v2.pdf_sha256
    assert first.method == "password+sms+name+drawn" and first.drawn is not None
    # The same code does not sign twice; the side has signed.
    with pytest.raises(DomainError):
        await call(
            app,
            w.claimant,
            sign,
            version_number=2,
            password=password,
            code=code,
            typed_name="张三",
            case_id=cid,
        )

    # An edit after a signature voids it and tells everyone.
    v3 = await call(app, w.mediator, save, terms(1_234_567, parts=3), case_id=cid)
    async with state.db() as db:
        signature = await db.get(AgreementSignature, first.id)
        assert signature is not None and signature.voided_at is not None
        told = await db.scalar(
            select(Notification).where(
                Notification.user_id == w.rep.id,
                Notification.body_msgid.contains("Every signature given is void"),
            )
        )
        assert told is not None
    await call(app, w.mediator, agreements.open_signing, case_id=cid)

    # Wrong codes are counted; the fifth locks signing.
    assert await call(app, w.rep, send, case_id=cid) == "email"
    for attempt in range(5):
        with pytest.raises(DomainError) as refused:
            await call(
                app,
                w.rep,
                sign,
                version_number=3,
                password=w.rep.password,
                code="000000",
                typed_name="李经理",
                case_id=cid,
            )
        assert refused.value.field == "code", attempt
        if attempt < 4:  # four tries left after the first wrong one, and so on
            assert refused.value.message.params["count"] == 4 - attempt
    good = await last_code(app, w.rep)
    with pytest.raises(DomainError) as refused:
        await call(
            app,
            w.rep,
            sign,
            version_number=3,
            password=w.rep.password,
            code=good,
            typed_name="李经理",
            case_id=cid,
        )
    assert "locked" in refused.value.message.msgid
    async with state.db() as db:  # half an hour later
        from portal.agreements.models import SigningCode

        for row in await db.scalars(select(SigningCode).where(SigningCode.user_id == w.rep.id)):
            row.created_at -= timedelta(minutes=31)
        await db.commit()
    with pytest.raises(DomainError):  # the old code has expired meanwhile? no: it was backdated
        await call(
            app,
            w.rep,
            sign,
            version_number=3,
            password="wrong password",
            code=good,
            typed_name="李经理",
            case_id=cid,
        )
    rep_signature = await call(
        app,
        w.rep,
        sign,
        version_number=3,
        password=w.rep.password,
        code=good,
        typed_name="李经理",
        case_id=cid,
    )
    assert rep_signature.pdf_sha256 == v3.pdf_sha256
    # Not in effect until the claimant signs this version too.
    async with state.db() as db:
        found = await agreements.access(db, cid)
        assert found.agreement is not None and found.agreement.status == "signing"
        assert found.case.status == "in_mediation"
    await call(app, w.claimant, send, case_id=cid)
    async with state.db() as db:  # ten minutes later the code has expired
        from portal.agreements.models import SigningCode

        latest = await db.scalar(
            select(SigningCode)
            .where(SigningCode.user_id == w.claimant.id)
            .order_by(SigningCode.id.desc())
            .limit(1)
        )
        assert latest is not None
        latest.expires_at = utcnow() - timedelta(seconds=1)
        await db.commit()
    with pytest.raises(DomainError) as refused:
        await call(
            app,
            w.claimant,
            sign,
            version_number=3,
            password=password,
            code=await last_code(app, w.claimant),
            typed_name="张三",
            case_id=cid,
        )
    assert refused.value.message.msgid.startswith("The code has expired")
    async with state.db() as db:
        assert (await db.get(SigningCode, latest.id)).attempts == 1  # type: ignore[union-attr]
        latest_row = await db.get(SigningCode, latest.id)
        assert latest_row is not None
        latest_row.expires_at = utcnow() + timedelta(minutes=5)
        await db.commit()
    await call(
        app,
        w.claimant,
        sign,
        version_number=3,
        password=password,
        code=await last_code(app, w.claimant),
        typed_name="张三",
        case_id=cid,
    )
    async with state.db() as db:
        found = await agreements.access(db, cid)
        assert found.agreement is not None and found.agreement.status == "effective"
        assert found.case.status == "settled"
        plan = await agreements.instalments(db, found.agreement)
        assert [i.amount_fen for i in plan] == [411_522, 411_522, 411_523]
        # The signature's leaf, checked by the offline verifier against the PDF signed.
        pdf = await agreements.version_pdf(db, found, 3)
        receipt = await log.make_leaf_receipt(db, rep_signature.leaf_id, state.log_key)
        await db.commit()
    report = verify_receipt(receipt, pdf, None)
    assert report.ok, report.to_dict()
    assert not verify_receipt(receipt, pdf + b"%", None).ok
    # And as a court would: the jiefen-verify command, on the receipt and the PDF as files.
    (tmp_path / "receipt.json").write_bytes(dump_receipt(receipt))
    (tmp_path / "agreement.pdf").write_bytes(pdf)
    (tmp_path / "altered.pdf").write_bytes(pdf.replace(b"%%EOF", b"%%EOF\n", 1))
    command = shutil.which("jiefen-verify", path=str(Path(sys.executable).parent))
    assert command is not None
    for name, status in (("agreement.pdf", 0), ("altered.pdf", 1)):
        process = await asyncio.create_subprocess_exec(
            command,
            str(tmp_path / "receipt.json"),
            str(tmp_path / name),
            "--lang",
            "zh",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        assert process.returncode == status, out.decode()
        if status == 0:
            assert "调解协议" in out.decode()  # it says what the entry records, in Chinese
    # The administrators' full check compares each signature's leaf with its row, and the
    # stored PDF with the hash signed: a change to either after signing is found.
    async with state.db() as db:
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert result.ok, result.problem
        await db.execute(
            update(AgreementSignature)
            .where(AgreementSignature.id == rep_signature.id)
            .values(side="claimant")
        )
        await db.commit()
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert not result.ok and f"agreement signature {rep_signature.id}" in result.problem
        await db.execute(
            update(AgreementSignature)
            .where(AgreementSignature.id == rep_signature.id)
            .values(side="respondent")
        )
        await db.execute(
            update(AgreementVersion).where(AgreementVersion.id == v3.id).values(pdf=pdf + b" ")
        )
        await db.commit()
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert not result.ok and "changed after it was signed" in result.problem
        await db.execute(
            update(AgreementVersion).where(AgreementVersion.id == v3.id).values(pdf=pdf)
        )
        await db.commit()
    # Editing after it took effect is refused.
    with pytest.raises(DomainError):
        await call(app, w.mediator, save, terms(100), case_id=cid)
    async with state.db() as db:
        found = await agreements.access(db, cid)
        executed = await agreements.executed_pdf(db, vault, found, "https://jiefen.example")
        # Kept: the same bytes again, without rendering.
        assert await db.scalar(select(Agreement.signed_pdf)) == executed
        assert await agreements.executed_pdf(db, vault, found, "https://other.example") == executed
        actions = [
            e.data.get("action")
            for e in await db.scalars(
                select(CaseEvent).where(CaseEvent.case_id == cid, CaseEvent.kind == "agreement")
            )
        ]
    assert executed.startswith(b"%PDF") and executed != pdf
    assert actions == [
        "started",
        "version",
        "signing",
        "signed",
        "version",
        "signing",
        "signed",
        "signed",
        "effective",
    ]


async def make_effective(app: Any, w: World, agreed: Terms) -> None:
    """The mediator drafts ``agreed``, both sides sign it: in effect."""
    state = app.starlette.state
    vault, settings = state.vault, state.settings
    cid = w.case_id
    async with state.db() as db:
        mediator = await db.get(User, w.mediator.id)
        found = await agreements.access(db, cid)
        assert mediator is not None
        await agreements.start(db, vault, found, mediator)
        found = await agreements.access(db, cid)
        await agreements.save_version(db, vault, found, mediator, agreed)
        await agreements.open_signing(db, found, mediator)
    for person, name in ((w.claimant, "张三"), (w.rep, "李经理")):
        async with state.db() as db:
            user = await db.get(User, person.id)
            assert user is not None
            found = await agreements.access(db, cid)
            await agreements.send_code(db, settings, vault, found, user)
        async with state.db() as db:
            user = await db.get(User, person.id)
            found = await agreements.access(db, cid)
            assert user is not None
            await agreements.sign(
                db,
                settings,
                found,
                user,
                version_number=2,
                password=person.password,
                code=await last_code(app, person),
                typed_name=name,
            )


async def test_payments_falling_due_and_overdue_are_reminded_once(app: Any) -> None:
    state = app.starlette.state
    w = await build(app)
    await make_effective(app, w, terms(300_000, parts=2))
    async with state.db() as db:
        found = await agreements.access(db, w.case_id)
        assert found.agreement is not None
        first, second = await agreements.instalments(db, found.agreement)
    noon = datetime.combine(first.due_on, time(4, 0), tzinfo=UTC)  # 12:00 in China

    async def run(now: datetime) -> tuple[int, int]:
        async with state.db() as db:
            report = await send_fulfilment_reminders(db, now)
        return report.due, report.overdue

    async def told(person: Person, text: str) -> int:
        async with state.db() as db:
            rows = await db.scalars(
                select(Notification.id).where(
                    Notification.user_id == person.id,
                    Notification.channel == "in_app",
                    Notification.body_msgid.contains(text),
                )
            )
            return len(list(rows))

    assert await run(noon - timedelta(days=4)) == (0, 0)
    assert await run(noon - timedelta(days=2)) == (1, 0)  # the first falls due in 2 days
    assert await run(noon - timedelta(days=2)) == (0, 0)  # once
    assert await told(w.rep, "falls due on") == 1
    assert await run(noon + timedelta(days=1)) == (0, 1)  # unpaid the day after
    assert await told(w.mediator, "has missed payment") == 1
    assert await told(w.claimant, "has not recorded it") == 1
    assert await told(w.other_rep, "overdue") == 0
    assert await run(noon + timedelta(days=2)) == (0, 0)
    # The second is paid before it falls due: no reminder for it.
    await call(
        app,
        w.rep,
        agreements.record_payment,
        2,
        amount="1500",
        paid_on=utcnow().date().isoformat(),
        case_id=w.case_id,
    )
    later = datetime.combine(second.due_on, time(4, 0), tzinfo=UTC)
    assert await run(later + timedelta(days=5)) == (0, 0)


async def test_fulfilment_payments_must_match_and_be_confirmed(app: Any) -> None:
    state = app.starlette.state
    w = await build(app)
    cid = w.case_id
    await make_effective(app, w, terms(300_000, parts=2))
    today = utcnow().date().isoformat()

    async def pay(who: Person, number: int, amount: str, day: str = today) -> Any:
        return await call(
            app,
            who,
            agreements.record_payment,
            number,
            amount=amount,
            paid_on=day,
            reference="转账流水 001",
            case_id=cid,
        )

    async def answer(number: int, received: bool, reason: str = "") -> Any:
        return await call(
            app,
            w.claimant,
            agreements.answer_payment,
            number,
            received=received,
            reason=reason,
            case_id=cid,
        )

    # Amounts that do not match the schedule, dates in the future, unknown instalments.
    for number, amount, day in [(1, "1000", today), (1, "1500.01", today), (1, "abc", today)]:
        with pytest.raises(DomainError) as refused:
            await pay(w.rep, number, amount, day)
        assert refused.value.field == "amount"
    with pytest.raises(DomainError):
        await pay(w.rep, 1, "1500", (utcnow().date() + timedelta(days=3)).isoformat())
    with pytest.raises(NotFound):
        await pay(w.rep, 3, "1500")
    with pytest.raises(DomainError):
        await answer(1, True)  # nothing recorded yet
    await pay(w.rep, 1, "1,500.00")
    with pytest.raises(DomainError):
        await answer(1, False)  # a dispute needs a reason
    disputed = await answer(1, False, "没有收到")
    assert disputed.state == InstalmentState.DISPUTED
    await pay(w.rep, 1, "1500")
    await answer(1, True)
    async with state.db() as db:
        assert (await db.get(Case, cid)).status == "settled"  # type: ignore[union-attr]
        # Overdue: the second instalment's date passes without a payment.
        found = await agreements.access(db, cid)
        assert found.agreement is not None
        second = (await agreements.instalments(db, found.agreement))[1]
        assert not agreements.overdue(second, utcnow().date())
        assert agreements.overdue(second, second.due_on + timedelta(days=1))
    await pay(w.rep, 2, "1500")
    await answer(2, True)
    async with state.db() as db:
        case = await db.get(Case, cid)
        assert case is not None and case.status == "closed"
    # Closed: each side rates it once; the statistics read the averages.
    async with state.db() as db:
        case = await db.get(Case, cid)
        claimant = await db.get(User, w.claimant.id)
        rep = await db.get(User, w.rep.id)
        stranger = await db.get(User, w.stranger.id)
        assert case is not None and claimant is not None and rep is not None
        assert stranger is not None
        assert state.policy.permits(identity_of(claimant), "rate", SurveyAccess(case))
        assert not state.policy.permits(identity_of(stranger), "rate", SurveyAccess(case))
        good = {"fairness": "5", "speed": "4", "mediator": "5", "platform": "3"}
        for bad, field in [
            ({**good, "speed": "6"}, "speed"),
            ({**good, "fairness": ""}, "fairness"),
        ]:
            with pytest.raises(DomainError) as refused:
                await survey.rate(db, case, claimant, bad, "")
            assert refused.value.field == field
        with pytest.raises(DomainError):
            await survey.rate(db, case, stranger, good, "")
        await survey.rate(db, case, claimant, good, "调解员很耐心")
        with pytest.raises(DomainError):
            await survey.rate(db, case, claimant, good, "再评一次")
        case = await db.get(Case, cid)
        rep = await db.get(User, w.rep.id)
        assert case is not None and rep is not None
        await survey.rate(db, case, rep, {**good, "fairness": "4", "platform": "5"}, "")
        result = await survey.summary(db)
    assert result.count == 2
    assert result.averages == {"fairness": 4.5, "speed": 4.0, "mediator": 5.0, "platform": 4.0}


async def test_judicial_confirmation_package_and_court_referral(app: Any) -> None:
    state = app.starlette.state
    w = await build(app)
    cid = w.case_id
    await make_effective(app, w, terms(500_000))
    async with state.db() as db:
        staff = await db.scalar(select(User).where(User.role == "committee_admin"))
    assert staff is not None
    admin = Person(staff, "", "")

    async with state.db() as db:  # more than 30 days after it took effect: too late
        found = await agreements.access(db, cid)
        assert found.agreement is not None and found.agreement.effective_at is not None
        took_effect = found.agreement.effective_at
        found.agreement.effective_at = took_effect - timedelta(days=31)
        await db.commit()
    with pytest.raises(DomainError) as refused:
        await call(app, w.claimant, judicial.apply, "北京市西城区人民法院", case_id=cid)
    assert "30 days" in refused.value.message.msgid
    async with state.db() as db:
        found = await agreements.access(db, cid)
        assert found.agreement is not None
        found.agreement.effective_at = took_effect
        await db.commit()
    await call(app, w.claimant, judicial.apply, "北京市西城区人民法院", case_id=cid)
    with pytest.raises(DomainError) as refused:
        await call(app, w.rep, judicial.apply, "上海市黄浦区人民法院", case_id=cid)
    assert refused.value.field == "court"
    with pytest.raises(DomainError):
        await call(app, w.claimant, judicial.apply, "北京市西城区人民法院", case_id=cid)
    with pytest.raises(DomainError):  # not a signing party
        await call(app, w.other_rep, judicial.apply, "北京市西城区人民法院", case_id=cid)
    row = await call(app, w.rep, judicial.apply, " 北京市西城区人民法院 ", case_id=cid)
    assert row.status == "applied"

    async with state.db() as db:
        found = await agreements.access(db, cid)
        package = await judicial.judicial_package(
            db, state.vault, found, "https://jiefen.example", state.log_key
        )
        await db.commit()
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        names = set(archive.namelist())
        assert names == {
            "01-application.pdf",
            "02-agreement-signed.pdf",
            "03-agreement-as-signed.pdf",
            "04-identity-checks.txt",
            "README.txt",
            "receipts/signature-claimant.json",
            "receipts/signature-respondent.json",
        }
        signed = archive.read("03-agreement-as-signed.pdf")
        for side in ("claimant", "respondent"):
            receipt = archive.read(f"receipts/signature-{side}.json")
            assert verify_receipt(receipt, signed, None).ok
        checks = archive.read("04-identity-checks.txt").decode()
        assert "张三" in checks and "李经理" in checks and "短信验证码" in checks
        assert archive.read("01-application.pdf").startswith(b"%PDF")

    decide = judicial.record_decision
    today = utcnow().date()
    for kw, field in [
        ({"outcome": "maybe"}, "outcome"),
        ({"court_case_number": "x"}, "court_case_number"),
        ({"decided_on": (today + timedelta(days=2)).isoformat()}, "decided_on"),
        ({"outcome": "refused", "note": ""}, "note"),
    ]:
        args = {
            "outcome": "confirmed",
            "court_case_number": "(2026)京0102民特123号",
            "decided_on": today.isoformat(),
            "note": "",
            **kw,
        }
        with pytest.raises(DomainError) as refused:
            await call(app, admin, decide, case_id=cid, **args)
        assert refused.value.field == field
    decided = await call(
        app,
        admin,
        decide,
        outcome="confirmed",
        court_case_number="(2026)京0102民特123号",
        decided_on=today.isoformat(),
        case_id=cid,
    )
    assert decided.status == "confirmed"
    with pytest.raises(DomainError):  # answered once
        await call(
            app,
            admin,
            decide,
            outcome="refused",
            court_case_number="(2026)京0102民特123号",
            decided_on=today.isoformat(),
            note="不符合",
            case_id=cid,
        )

    # A court referral, and the report back to the court once there is an outcome.
    async with state.db() as db:
        case = await db.get(Case, cid)
        user = await db.get(User, staff.id)
        assert case is not None and user is not None
        with pytest.raises(DomainError) as refused:
            await judicial.record_referral(
                db,
                case,
                user,
                court="北京市西城区人民法院",
                court_case_number="(2026)京0102民初1号",
                referred_on="2026-13-01",
            )
        assert refused.value.field == "referred_on"
        await judicial.record_referral(
            db,
            case,
            user,
            court="北京市西城区人民法院",
            court_case_number="(2026)京0102民初1号",
            referred_on=today.isoformat(),
        )
        found = await agreements.access(db, cid)
        report = await judicial.referral_report(
            db, state.vault, found, user, "https://jiefen.example", state.log_key
        )
        referral = await judicial.referral(db, found.case)
    assert referral is not None and referral.reported_at is not None
    with zipfile.ZipFile(io.BytesIO(report.data)) as archive:
        assert "01-report.pdf" in archive.namelist()
        assert "receipts/signature-claimant.json" in archive.namelist()


async def test_undisputed_facts_transfer_and_the_case_file(app: Any) -> None:
    state = app.starlette.state
    w = await build(app)
    cid = w.case_id

    async def on_litigation(who: Person, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with state.db() as db:
            user = await db.get(User, who.id)
            assert user is not None
            found = await litigation.access(db, cid)
            return await fn(db, found, user, *args)

    with pytest.raises(DomainError):
        await on_litigation(w.mediator, litigation.write_facts, "   ")
    facts = await on_litigation(
        w.mediator,
        litigation.write_facts,
        "一、申请人于2025年3月办理信用卡。\r\n二、欠款本金为人民币8,000元。",
    )
    assert facts.revision == 1 and "\r" not in facts.text
    with pytest.raises(DomainError):  # an old revision
        await on_litigation(w.claimant, litigation.confirm_facts, 0)
    with pytest.raises(DomainError):
        await on_litigation(w.stranger, litigation.confirm_facts, 1)
    await on_litigation(w.claimant, litigation.confirm_facts, 1)
    with pytest.raises(DomainError):
        await on_litigation(w.claimant, litigation.confirm_facts, 1)
    # A change clears the confirmations; both confirm the new text.
    facts = await on_litigation(
        w.mediator,
        litigation.write_facts,
        "一、申请人于2025年3月办理信用卡。\n二、欠款本金为人民币8,000元。\n三、双方对利息有争议。",
    )
    assert facts.revision == 2 and facts.claimant_confirmed_at is None
    await on_litigation(w.claimant, litigation.confirm_facts, 2)
    await on_litigation(w.rep, litigation.confirm_facts, 2)
    # Not failed yet: no transfer, no case file.
    with pytest.raises(DomainError):
        await on_litigation(w.mediator, litigation.transfer)
    async with state.db() as db:
        found = await litigation.access(db, cid)
        with pytest.raises(DomainError):
            await litigation.bundle(
                db, state.vault, state.blobs, found, state.log_key, lambda m: True
            )
        mediator = await db.get(User, w.mediator.id)
        assert mediator is not None
        from portal.cases import service as cases

        await cases.apply_transition(db, found.case, mediator, "fail", "双方对利息分歧较大")
    await on_litigation(w.mediator, litigation.transfer)
    async with state.db() as db:
        found = await litigation.access(db, cid)
        assert found.case.status == "transferred_to_litigation"
        assert litigation.confirmed(found.facts, found.case)
        rep = await db.get(User, w.rep.id)
        claimant = await db.get(User, w.claimant.id)
        assert rep is not None and claimant is not None

        def viewer(user: User) -> Callable[[Any], bool]:
            return lambda m: state.policy.permits(identity_of(user), "view", Item(m, found.case))

        package = await litigation.bundle(
            db, state.vault, state.blobs, found, state.log_key, viewer(rep)
        )
        own = await litigation.bundle(
            db, state.vault, state.blobs, found, state.log_key, viewer(claimant)
        )
        kinds = {m.id: m.kind for m in await db.scalars(select(CaseMaterial))}
        told = await db.scalar(
            select(Notification.id).where(
                Notification.user_id == w.claimant.id,
                Notification.body_msgid.contains("transferred to litigation"),
            )
        )
        await db.commit()
    assert told is not None
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        names = archive.namelist()
        assert names[:3] == ["00-index.pdf", "01-claims.txt", "02-timeline.txt"]
        assert "05-undisputed-facts.txt" in names
        facts_text = archive.read("05-undisputed-facts.txt").decode()
        assert "双方均已确认" in facts_text and "三、双方对利息有争议。" in facts_text
        claims = archive.read("01-claims.txt").decode()
        assert "纠纷类别：信用卡" in claims
        evidence = [n for n in names if n.startswith("04-evidence/") and not n.endswith(".json")]
        # The firm's copy has no identity papers of the claimant; the claimant's own has.
        firm_kinds = {kinds[int(n.split("/")[1].split("-")[0])] for n in evidence}
        assert "contract" in firm_kinds and "identity" not in firm_kinds
        with zipfile.ZipFile(io.BytesIO(own.data)) as mine:
            own_kinds = {
                kinds[int(n.split("/")[1].split("-")[0])]
                for n in mine.namelist()
                if n.startswith("04-evidence/") and not n.endswith(".json")
            }
        assert "identity" in own_kinds
        for name in evidence:
            item = name.split("/", 1)[1].split("-", 1)[0]
            receipt = archive.read(f"04-evidence/{item}.receipt.json")
            assert verify_receipt(receipt, archive.read(name), None).ok, name
        index = archive.read("00-index.pdf")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(index)).pages)
    assert "案件材料目录" in text and "01-claims.txt" in text


async def test_both_parties_signing_at_once_put_it_in_effect_once(app: Any) -> None:
    state = app.starlette.state
    w = await build(app)
    cid = w.case_id
    settings, vault = state.settings, state.vault
    async with state.db() as db:
        mediator = await db.get(User, w.mediator.id)
        assert mediator is not None
        await agreements.start(db, vault, await agreements.access(db, cid), mediator)
        found = await agreements.access(db, cid)
        await agreements.save_version(db, vault, found, mediator, terms(100_000, parts=2))
        await agreements.open_signing(db, found, mediator)
    codes = {}
    for person in (w.claimant, w.rep):
        await call(
            app,
            person,
            lambda db, f, u: agreements.send_code(db, settings, vault, f, u),
            case_id=cid,
        )
        codes[person.id] = await last_code(app, person)

    async def sign_as(person: Person, name: str) -> Any:
        return await call(
            app,
            person,
            lambda db, f, u: agreements.sign(
                db,
                settings,
                f,
                u,
                version_number=2,
                password=person.password,
                code=codes[person.id],
                typed_name=name,
            ),
            case_id=cid,
        )

    both = await asyncio.gather(sign_as(w.claimant, "张三"), sign_as(w.rep, "李经理"))
    assert {s.side for s in both} == {"claimant", "respondent"}
    async with state.db() as db:
        found = await agreements.access(db, cid)
        assert found.agreement is not None and found.agreement.status == "effective"
        assert found.case.status == "settled"
        assert len(await agreements.instalments(db, found.agreement)) == 2
        effective = await db.scalars(
            select(CaseEvent).where(CaseEvent.case_id == cid, CaseEvent.kind == "agreement")
        )
        assert [e.data["action"] for e in effective].count("effective") == 1


async def test_signing_stops_when_the_case_leaves_mediation_and_other_refusals(
    app: Any,
) -> None:
    state = app.starlette.state
    w = await build(app)
    cid = w.case_id
    settings, vault = state.settings, state.vault
    async with state.db() as db:
        mediator = await db.get(User, w.mediator.id)
        assert mediator is not None
        await agreements.start(db, vault, await agreements.access(db, cid), mediator)
        found = await agreements.access(db, cid)
        # A payment date that has passed by the time signing opens is refused.
        stale = Terms(
            refund_fen=100_00,
            payments=(Payment(100_00, utcnow().date() + timedelta(days=1)),),
        )
        await agreements.save_version(db, vault, found, mediator, stale)
        row = await agreements.current(db, found.agreement)  # type: ignore[arg-type]
        row.terms = {**row.terms, "payments": [{"amount_fen": 100_00, "due": "2020-01-01"}]}
        await db.commit()
        with pytest.raises(DomainError) as refused:
            await agreements.open_signing(db, await agreements.access(db, cid), mediator)
        assert "past" in refused.value.message.msgid
        await agreements.save_version(
            db, vault, await agreements.access(db, cid), mediator, terms()
        )
        await agreements.open_signing(db, await agreements.access(db, cid), mediator)
    await call(
        app,
        w.claimant,
        lambda db, f, u: agreements.send_code(db, settings, vault, f, u),
        case_id=cid,
    )
    code = await last_code(app, w.claimant)
    # A name the agreement's font cannot print is refused, not signed as an empty box.
    async with state.db() as db:
        claimant = await db.get(User, w.claimant.id)
        assert claimant is not None
        claimant.display_name = "张𠮷"
        await db.commit()
    with pytest.raises(DomainError) as refused:
        await call(
            app,
            w.claimant,
            lambda db, f, u: agreements.sign(
                db,
                settings,
                f,
                u,
                version_number=3,
                password=w.claimant.password,
                code=code,
                typed_name="张𠮷",
            ),
            case_id=cid,
        )
    assert (
        refused.value.field == "typed_name" and refused.value.message.params["characters"] == "𠮷"
    )
    async with state.db() as db:
        claimant = await db.get(User, w.claimant.id)
        assert claimant is not None
        claimant.display_name = "张三"
        await db.commit()
    # The mediator records that mediation failed: the agreement can no longer be signed.
    async with state.db() as db:
        from portal.cases import service as cases

        mediator = await db.get(User, w.mediator.id)
        case = await db.get(Case, cid)
        assert mediator is not None and case is not None
        await cases.apply_transition(db, case, mediator, "fail", "分歧过大")
    with pytest.raises(DomainError) as refused:
        await call(
            app,
            w.claimant,
            lambda db, f, u: agreements.sign(
                db,
                settings,
                f,
                u,
                version_number=3,
                password=w.claimant.password,
                code=code,
                typed_name="张三",
            ),
            case_id=cid,
        )
    assert "no longer in mediation" in refused.value.message.msgid
    async with state.db() as db:
        assert not list(await db.scalars(select(AgreementSignature)))
        # Someone on both sides (a firm's representative who filed against their own firm)
        # signs and answers for neither.
        case = await db.get(Case, cid)
        rep = await db.get(User, w.rep.id)
        assert case is not None and rep is not None
        case.filer_id = rep.id
        assert agreements.side_of(case, rep) is None
        await db.rollback()
    # Transferred once: a second click is refused.
    async with state.db() as db:
        mediator = await db.get(User, w.mediator.id)
        assert mediator is not None
        await litigation.transfer(db, await litigation.access(db, cid), mediator)
        with pytest.raises(DomainError):
            await litigation.transfer(db, await litigation.access(db, cid), mediator)
        transfers = await db.scalars(
            select(CaseEvent).where(
                CaseEvent.case_id == cid, CaseEvent.to_status == "transferred_to_litigation"
            )
        )
        assert len(list(transfers)) == 1
