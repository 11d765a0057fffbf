"""Judicial confirmation (司法确认) of an agreement in effect, and court referrals (委派调解).

Both sides apply together: one names the court, the other joins; then the application package
is ready (a zip of the application form, the signed agreement, the exact PDF each party signed,
how each signer's identity was checked, and the evidence-log receipt of each signature, with a
note on checking them offline). The court's answer (confirmed or refused, its case number) is
entered by the committee's staff.

A case the court referred to mediation records the court and the court's case number; once
mediation has an outcome, the report package for the court is made from the same parts.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.agreements import service
from portal.agreements.models import (
    Agreement,
    AgreementStatus,
    CourtReferral,
    JudicialApplication,
    JudicialStatus,
)
from portal.agreements.pdf import AgreementDocument
from portal.agreements.policy import AgreementAccess
from portal.audit.service import record
from portal.cases.lifecycle import Status
from portal.cases.models import Case
from portal.cases.service import TZ
from portal.crypto import DataVault
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence import log
from portal.evidence.log import LogKey
from portal.evidence.verify.receipt import dump_receipt
from portal.i18n import Msg, _l
from portal.notify.service import notify

JUDICIAL_LABELS: dict[str, Msg] = {
    JudicialStatus.REQUESTED: _l("Waiting for the other party to join"),
    JudicialStatus.APPLIED: _l("Applied: waiting for the court"),
    JudicialStatus.CONFIRMED: _l("Confirmed by the court"),
    JudicialStatus.REFUSED: _l("Refused by the court"),
}
APPLY_WITHIN = timedelta(days=30)
# Zip entries get a fixed time, so that the same package has the same bytes.
_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
_VERIFY_NOTE = (
    "核验说明 / How to check\n\n"
    "每个签名在解纷存证日志中都有一条记录；receipts/ 目录下是其回执。核验方法：\n"
    "  jiefen-verify receipts/signature-claimant.json 03-agreement-as-signed.pdf\n"
    "核验结果为“通过”时，说明该 PDF 正是签署时的文件，且记录自签署后未被改动。\n\n"
    "Each signature has an entry in Jiefen's evidence log; receipts/ holds their receipts.\n"
    "Check one with: jiefen-verify receipts/signature-claimant.json 03-agreement-as-signed.pdf\n"
    "A pass means that PDF is the file signed and the entry is unchanged since.\n"
)


async def application(db: AsyncSession, agreement: Agreement) -> JudicialApplication | None:
    found: JudicialApplication | None = await db.scalar(
        select(JudicialApplication).where(JudicialApplication.agreement_id == agreement.id)
    )
    return found


def _effective(found: AgreementAccess) -> Agreement:
    agreement = found.agreement
    if agreement is None:
        raise NotFound
    if agreement.status != AgreementStatus.EFFECTIVE:
        raise DomainError(_l("The agreement is not in effect yet."))
    return agreement


def _court(text: str, field: str = "court") -> str:
    text = " ".join(text.split())
    if not 2 <= len(text) <= 120:
        raise DomainError(_l("Give the court's full name."), field=field)
    return text


async def apply(
    db: AsyncSession, found: AgreementAccess, actor: User, court: str
) -> JudicialApplication:
    """The actor's side applies for judicial confirmation at ``court`` (or joins the other
    side's application there). Once both sides have, the application stands."""
    agreement = _effective(found)
    side = service.side_of(found.case, actor)
    if side is None or side not in service.required_sides(found.case):
        raise DomainError(_l("You are not one of the parties who sign this agreement."))
    court = _court(court)
    await service.lock(db, agreement)  # both sides joining at once: one after the other
    if agreement.effective_at is not None and utcnow() > agreement.effective_at + APPLY_WITHIN:
        raise DomainError(
            _l(
                "Judicial confirmation must be applied for within 30 days of the agreement "
                "taking effect. The time has passed."
            )
        )
    now = utcnow()
    row = await application(db, agreement)
    if row is None:
        row = JudicialApplication(agreement_id=agreement.id, court=court)
        db.add(row)
    elif row.status != JudicialStatus.REQUESTED:
        raise DomainError(_l("The application has already been made."))
    elif row.court != court:
        raise DomainError(
            _l(
                "The other party applies at {court}. Apply there too, or agree on another "
                "court with them and the mediator.",
                court=row.court,
            ),
            field="court",
        )
    column = "claimant_joined_at" if side == "claimant" else "respondent_joined_at"
    if getattr(row, column) is not None:
        raise DomainError(_l("Your side has already applied."))
    setattr(row, column, now)
    joined = {
        s
        for s, at in (
            ("claimant", row.claimant_joined_at),
            ("respondent", row.respondent_joined_at),
        )
        if at is not None
    }
    number = found.case.number or str(found.case.id)
    if joined >= set(service.required_sides(found.case)):
        row.status = JudicialStatus.APPLIED.value
        row.applied_at = now
        service._timeline(db, found.case, actor.id, "judicial_applied", court=court)
        for user_id in await service._people(db, found.case):
            await notify(
                db,
                user_id,
                _l("Case {number}: judicial confirmation applied for", number=number),
                _l(
                    "Both parties apply to {court} to confirm the agreement of case {number}. "
                    "The application package is on the agreement page.",
                    court=court,
                    number=number,
                ),
                link=f"/cases/{found.case.id}/agreement",
            )
    else:
        service._timeline(db, found.case, actor.id, "judicial_requested", court=court, side=side)
        await service._tell(
            db,
            found.case,
            _l("Case {number}: apply for judicial confirmation?", number=number),
            _l(
                "The other party wants to apply to {court} to confirm the agreement of case "
                "{number}. Join the application on the agreement page if you agree.",
                court=court,
                number=number,
            ),
            skip=actor.id,
        )
    record(db, actor.id, "agreement.judicial_apply", "agreement", agreement.id, side=side)
    await db.commit()
    return row


async def record_decision(
    db: AsyncSession,
    found: AgreementAccess,
    actor: User,
    *,
    outcome: str,
    court_case_number: str,
    decided_on: str,
    note: str = "",
) -> JudicialApplication:
    """Staff enter the court's answer to an application that stands."""
    agreement = _effective(found)
    await service.lock(db, agreement)
    row = await application(db, agreement)
    if row is None or row.status != JudicialStatus.APPLIED:
        raise DomainError(_l("There is no application waiting for the court's answer."))
    if outcome not in (JudicialStatus.CONFIRMED, JudicialStatus.REFUSED):
        raise DomainError(_l("Choose one of the options."), field="outcome")
    court_case_number = " ".join(court_case_number.split())
    if not 2 <= len(court_case_number) <= 60:
        raise DomainError(_l("Give the court's case number."), field="court_case_number")
    try:
        day = date.fromisoformat(decided_on.strip())
    except ValueError:
        raise DomainError(_l("Enter a date as YYYY-MM-DD."), field="decided_on") from None
    if day > utcnow().astimezone(TZ).date():
        raise DomainError(_l("The date is in the future."), field="decided_on")
    if outcome == JudicialStatus.REFUSED and not note.strip():
        raise DomainError(_l("Give the court's reasons."), field="note")
    row.status = outcome
    row.court_case_number = court_case_number
    row.decided_on = day
    row.decision_note = note.strip()[:2000]
    row.entered_by = actor.id
    service._timeline(db, found.case, actor.id, f"judicial_{outcome}", court=row.court)
    record(db, actor.id, f"agreement.judicial_{outcome}", "agreement", agreement.id)
    number = found.case.number or str(found.case.id)
    await service._tell(
        db,
        found.case,
        _l("Case {number}: the court has answered", number=number),
        _l(
            "{court} answered the application to confirm the agreement of case {number}: "
            "{outcome}.",
            court=row.court,
            number=number,
            outcome={"msgid": JUDICIAL_LABELS[outcome].msgid},
        ),
        skip=actor.id,
    )
    await db.commit()
    return row


# -- packages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    data: bytes


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _local(moment: datetime) -> str:
    return moment.astimezone(TZ).strftime("%Y-%m-%d %H:%M") + "（北京时间）"


async def _signed_parts(
    db: AsyncSession, vault: DataVault, found: AgreementAccess, base_url: str, log_key: LogKey
) -> list[tuple[str, bytes]]:
    """The signed agreement, the PDF as signed, the signers' identity checks and the
    receipts of their signatures."""
    agreement = _effective(found)
    current = await service.current(db, agreement)
    live = [
        s
        for s in await service.signatures(db, agreement, live_only=True)
        if s.version_id == current.id
    ]
    files = [
        ("02-agreement-signed.pdf", await service.executed_pdf(db, vault, found, base_url)),
        ("03-agreement-as-signed.pdf", await service.stored_pdf(db, current)),
    ]
    lines = ["身份核验说明 / Identity checks of the signers", ""]
    for s in live:
        user = await db.get(User, s.user_id)
        channel = "短信验证码（已验证的手机号）" if "sms" in s.method else "电子邮件验证码"
        lines += [
            f"{service.SIDE_LABELS_ZH[s.side]}：{s.typed_name}",
            f"  签署时间：{_local(s.signed_at)}",
            f"  核验方式：重新输入账户密码；{channel}；输入全名"
            + ("；手写签名" if s.drawn else ""),
            f"  账户：{user.display_name if user else '—'}（平台账户编号 {s.user_id}）",
            f"  所签文件 SHA-256：{s.pdf_sha256}",
            "",
        ]
        if s.leaf_id is not None:
            receipt = await log.make_leaf_receipt(db, s.leaf_id, log_key)
            files.append((f"receipts/signature-{s.side}.json", dump_receipt(receipt)))
    files.append(("04-identity-checks.txt", "\n".join(lines).encode("utf-8")))
    files.append(("README.txt", _VERIFY_NOTE.encode("utf-8")))
    return files


async def judicial_package(
    db: AsyncSession, vault: DataVault, found: AgreementAccess, base_url: str, log_key: LogKey
) -> Package:
    agreement = _effective(found)
    row = await application(db, agreement)
    if row is None or row.status == JudicialStatus.REQUESTED:
        raise DomainError(_l("Both parties must apply before the package is made."))
    case = found.case
    people = await service.parties(db, vault, case)
    current = await service.current(db, agreement)
    form = AgreementDocument(
        title="司法确认申请书",
        case_number=case.number or f"#{case.id}",
        version=current.number,
        parties=[(p.label_zh, p.text) for p in people],
        preamble=f"申请人与被申请人共同向{row.court}申请司法确认：",
        clauses=[
            "请求事项：确认双方于"
            f"{_local(agreement.effective_at or utcnow())}生效的调解协议书（案号 "
            f"{case.number}，第 {current.number} 版）有效。",
            "事实与理由：双方之间的纠纷经调解组织主持调解，双方自愿达成调解协议，协议内容不违反"
            "法律、行政法规的强制性规定，不损害国家利益、社会公共利益和他人合法权益。",
            "双方保证提交的证明材料真实、合法，并知悉虚假申请的法律后果。",
            "附：调解协议书（已签署）、所签文件原件、身份核验说明、签名存证回执。",
        ],
        closing="此致\n" + row.court,
        required_signers=[service.SIDE_LABELS_ZH[s] for s in service.required_sides(case)],
        created_at=(row.applied_at or utcnow()).replace(microsecond=0),
        footer="解纷 · 在线调解平台",
    )
    files = [("01-application.pdf", await service.render(form))]
    files += await _signed_parts(db, vault, found, base_url, log_key)
    return Package(f"judicial-confirmation-{case.number or case.id}.zip", _zip(files))


# -- court referrals -------------------------------------------------------------------------


async def referral(db: AsyncSession, case: Case) -> CourtReferral | None:
    found: CourtReferral | None = await db.scalar(
        select(CourtReferral).where(CourtReferral.case_id == case.id)
    )
    return found


async def record_referral(
    db: AsyncSession,
    case: Case,
    actor: User,
    *,
    court: str,
    court_case_number: str,
    referred_on: str,
) -> CourtReferral:
    """Staff record that the court referred this case (委派调解)."""
    if await referral(db, case) is not None:
        raise DomainError(_l("The referral has already been recorded."))
    court = _court(court)
    court_case_number = " ".join(court_case_number.split())
    if not 2 <= len(court_case_number) <= 60:
        raise DomainError(_l("Give the court's case number."), field="court_case_number")
    try:
        day = date.fromisoformat(referred_on.strip())
    except ValueError:
        raise DomainError(_l("Enter a date as YYYY-MM-DD."), field="referred_on") from None
    if day > utcnow().astimezone(TZ).date():
        raise DomainError(_l("The date is in the future."), field="referred_on")
    row = CourtReferral(
        case_id=case.id,
        court=court,
        court_case_number=court_case_number,
        referred_on=day,
        recorded_by=actor.id,
    )
    db.add(row)
    try:
        await db.flush()
    except IntegrityError:  # recorded meanwhile (a second click)
        await db.rollback()
        raise DomainError(_l("The referral has already been recorded.")) from None
    service._timeline(db, case, actor.id, "referral", court=court)
    record(db, actor.id, "case.referral", "case", case.id, court=court)
    await db.commit()
    return row


_STATUS_ZH: dict[str, str] = {
    Status.SETTLED: "已达成调解协议",
    Status.FULFILLED: "调解协议已履行",
    Status.FAILED: "调解未成功",
    Status.TRANSFERRED: "已转入诉讼",
    Status.CLOSED: "已结案",
}
REPORTABLE = frozenset(
    {Status.SETTLED, Status.FULFILLED, Status.FAILED, Status.TRANSFERRED, Status.CLOSED}
)


async def referral_report(
    db: AsyncSession,
    vault: DataVault,
    found: AgreementAccess,
    actor: User,
    base_url: str,
    log_key: LogKey,
) -> Package:
    """The report to the referring court once mediation has an outcome: a report PDF, and,
    if the parties settled, the signed agreement with its receipts. Marks it reported."""
    case = found.case
    row = await referral(db, case)
    if row is None:
        raise NotFound
    if Status(case.status) not in REPORTABLE:
        raise DomainError(_l("Mediation has no outcome to report yet."))
    settled = found.agreement is not None and found.agreement.status == AgreementStatus.EFFECTIVE
    outcome_zh = "调解成功，双方签署调解协议书" if settled else "调解未能达成协议"
    status_label = _STATUS_ZH.get(case.status, case.status)
    report = AgreementDocument(
        title="委派调解结果报告",
        case_number=case.number or f"#{case.id}",
        version=1,
        parties=[(p.label_zh, p.text) for p in await service.parties(db, vault, case)],
        preamble=(
            f"贵院于{row.referred_on.year}年{row.referred_on.month}月{row.referred_on.day}日"
            f"委派调解的案件（贵院案号 {row.court_case_number}），现将调解结果报告如下："
        ),
        clauses=[
            f"调解结果：{outcome_zh}。",
            f"案件状态：{status_label}。",
            "随附材料："
            + (
                "调解协议书（已签署）、所签文件原件、身份核验说明、签名存证回执。"
                if settled
                else "无。"
            ),
        ],
        closing="此致\n" + row.court,
        required_signers=[],
        created_at=utcnow().replace(microsecond=0),
        footer="解纷 · 在线调解平台",
    )
    files = [("01-report.pdf", await service.render(report))]
    if settled:
        files += await _signed_parts(db, vault, found, base_url, log_key)
    row.reported_at = utcnow()
    service._timeline(db, case, actor.id, "referral_reported", court=row.court)
    record(db, actor.id, "case.referral_report", "case", case.id)
    await db.commit()
    return Package(f"referral-report-{case.number or case.id}.zip", _zip(files))
