"""Settlement agreements: drafting, comments, signing, taking effect, and fulfilment.

Every change is one function here, in its own transaction, with an audit event; the case's
timeline says what happened in words the parties read. The policy (portal.agreements.policy)
says who may call what; these functions check the state the agreement must be in, and which
side an actor signs or answers for.

Signing binds the exact bytes of the version's PDF (portal.agreements.pdf renders it the same
every time): the signature row and its ``agreement.signature`` evidence-log leaf carry its
SHA-256, so anyone holding the PDF and the receipt can check with ``jiefen-verify`` that it is
the document signed. A new version after any signature voids all of them and says so.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import anyio.to_thread
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.accounts.service import PASSWORDS, contact_of
from portal.agreements.models import (
    Agreement,
    AgreementComment,
    AgreementSignature,
    AgreementStatus,
    AgreementVersion,
    Instalment,
    InstalmentState,
    SigningCode,
)
from portal.agreements.pdf import (
    AgreementDocument,
    Signature,
    drawn_strokes,
    render_agreement,
    unprintable,
)
from portal.agreements.policy import AgreementAccess
from portal.agreements.terms import (
    CLOSING_ZH,
    Terms,
    clauses,
    parse_fen,
    preamble,
    yuan,
)
from portal.audit.service import record
from portal.cases import service as cases
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseEvent
from portal.cases.service import TZ
from portal.crypto import DataVault, derive_key
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence.log import stage_leaf
from portal.evidence.models import LogLeaf
from portal.evidence.service import commitment
from portal.evidence.verify.leaf import AGREEMENT_SIGNATURE, agreement_signature_body
from portal.i18n import Msg, _l
from portal.notify.service import notify
from portal.orgs.models import Firm
from portal.policy import Role
from portal.settings import Settings

SIDES = ("claimant", "respondent")
SIDE_LABELS_ZH = {"claimant": "申请人", "respondent": "被申请人"}
SIDE_LABELS: dict[str, Msg] = {"claimant": _l("Claimant"), "respondent": _l("Firm")}
STATUS_LABELS: dict[str, Msg] = {
    AgreementStatus.DRAFTING: _l("Being drafted"),
    AgreementStatus.SIGNING: _l("Up for signature"),
    AgreementStatus.EFFECTIVE: _l("In effect"),
}
INSTALMENT_LABELS: dict[str, Msg] = {
    InstalmentState.DUE: _l("Due"),
    InstalmentState.PAID: _l("Paid: awaiting the claimant"),
    InstalmentState.CONFIRMED: _l("Received"),
    InstalmentState.DISPUTED: _l("Disputed by the claimant"),
}
# What each timeline event of kind "agreement" says (its data["action"]).
TIMELINE: dict[str, Msg] = {
    "started": _l("Settlement agreement drafted"),
    "version": _l("New version of the agreement"),
    "signing": _l("Agreement put up for signature"),
    "signed": _l("Agreement signed by one party"),
    "effective": _l("Agreement in effect: every party signed"),
    "paid": _l("Payment recorded by the firm"),
    "payment_confirmed": _l("Payment confirmed by the claimant"),
    "payment_disputed": _l("Payment disputed by the claimant"),
    "judicial_requested": _l("Judicial confirmation asked for by one party"),
    "judicial_applied": _l("Judicial confirmation applied for"),
    "judicial_confirmed": _l("Agreement confirmed by the court"),
    "judicial_refused": _l("Court refused to confirm the agreement"),
    "referral": _l("Court referral recorded"),
    "referral_reported": _l("Outcome reported to the court"),
    "facts_written": _l("Undisputed facts recorded"),
    "facts_confirmed": _l("Undisputed facts confirmed by one party"),
}
CODE_TTL = timedelta(minutes=10)
CODE_INTERVAL = timedelta(seconds=60)
MAX_FAILURES = 5  # wrong passwords or codes before signing is locked
LOCK_WINDOW = timedelta(minutes=30)
MAX_COMMENT = 2000
MAX_NOTE = 500
METHOD_TYPED = "password+{channel}+name"
METHOD_DRAWN = "password+{channel}+name+drawn"


@dataclass(frozen=True)
class Party:
    """One party as the agreement names it."""

    side: str
    label_zh: str
    text: str  # name and identification, as printed


def _case_link(case: Case) -> str:
    return f"/cases/{case.id}/agreement"


def _number(case: Case) -> Any:
    return case.number or {"msgid": _l("(draft)").msgid}


async def access(db: AsyncSession, case_id: int) -> AgreementAccess:
    case = await db.get(Case, case_id)
    if case is None:
        raise NotFound
    agreement = await db.scalar(select(Agreement).where(Agreement.case_id == case_id))
    return AgreementAccess(case, agreement)


async def lock(db: AsyncSession, agreement: Agreement, case: Case | None = None) -> None:
    """Take the agreement's row for this transaction (on SQLite, the database), then read it
    (and its case) afresh: edits, signatures, payments and taking effect happen one at a
    time, so two parties signing at the same moment both count and it takes effect once, and
    a case failed or withdrawn meanwhile is seen as such."""
    await db.execute(
        update(Agreement)
        .where(Agreement.id == agreement.id)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await db.refresh(agreement)
    if case is not None:
        await db.refresh(case)


def _require(found: AgreementAccess) -> Agreement:
    if found.agreement is None:
        raise NotFound
    return found.agreement


async def versions(db: AsyncSession, agreement: Agreement) -> list[AgreementVersion]:
    return list(
        await db.scalars(
            select(AgreementVersion)
            .where(AgreementVersion.agreement_id == agreement.id)
            .order_by(AgreementVersion.number)
        )
    )


async def version(db: AsyncSession, agreement: Agreement, number: int) -> AgreementVersion:
    found = await db.scalar(
        select(AgreementVersion).where(
            AgreementVersion.agreement_id == agreement.id, AgreementVersion.number == number
        )
    )
    if found is None:
        raise NotFound
    return found


async def current(db: AsyncSession, agreement: Agreement) -> AgreementVersion:
    return await version(db, agreement, agreement.current_version)


async def signatures(
    db: AsyncSession, agreement: Agreement, *, live_only: bool = False
) -> list[AgreementSignature]:
    query = select(AgreementSignature).where(AgreementSignature.agreement_id == agreement.id)
    if live_only:
        query = query.where(AgreementSignature.voided_at.is_(None))
    return list(await db.scalars(query.order_by(AgreementSignature.id)))


async def comments(
    db: AsyncSession, agreement: Agreement
) -> list[tuple[AgreementComment, str, int]]:
    """Every comment with its author's name and the version number it was made on."""
    rows = await db.execute(
        select(AgreementComment, User.display_name, AgreementVersion.number)
        .join(User, User.id == AgreementComment.author_id)
        .join(AgreementVersion, AgreementVersion.id == AgreementComment.version_id)
        .where(AgreementVersion.agreement_id == agreement.id)
        .order_by(AgreementComment.id)
    )
    return [(c, name, number) for c, name, number in rows]


def required_sides(case: Case) -> tuple[str, ...]:
    """Who must sign: the claimant, and the firm when it is on the platform."""
    return SIDES if case.respondent_firm_id is not None else ("claimant",)


def side_of(case: Case, user: User) -> str | None:
    """The side this user signs and answers for; none for someone on both sides (a firm's
    representative who filed against their own firm may act for neither)."""
    filer = user.id == case.filer_id
    firm_rep = (
        user.role == Role.FIRM_REP
        and case.respondent_firm_id is not None
        and user.firm_id == case.respondent_firm_id
    )
    if filer and firm_rep:
        return None
    if filer:
        return "claimant"
    if firm_rep:
        return "respondent"
    return None


async def _people(db: AsyncSession, case: Case) -> list[int]:
    """Everyone told about the agreement: the mediator, the claimant, the firm's people."""
    reps = await cases._firm_reps(db, case.respondent_firm_id)
    return [i for i in dict.fromkeys([case.mediator_id, case.filer_id, *reps]) if i is not None]


async def _tell(
    db: AsyncSession, case: Case, title: Msg, body: Msg, skip: int | None = None
) -> None:
    for user_id in await _people(db, case):
        if user_id != skip:
            await notify(db, user_id, title, body, link=_case_link(case))


def _timeline(db: AsyncSession, case: Case, actor_id: int, action: str, **data: Any) -> None:
    db.add(
        CaseEvent(
            case_id=case.id,
            actor_id=actor_id,
            kind="agreement",
            data={"action": action, **data},
            visibility="all",
        )
    )


# -- the document ---------------------------------------------------------------------------


async def parties(db: AsyncSession, vault: DataVault, case: Case) -> list[Party]:
    """The parties as printed: the claimant's name and masked ID number (with the agent, if
    any), and the firm with its unified social credit code."""
    claimant = cases.claimant_of(vault, case)
    text = claimant.name or "—"
    if claimant.id_number:
        text += f"，身份证号码 {claimant.id_masked}"
    if claimant.agent_name:
        text += f"；委托代理人 {claimant.agent_name}"
    firm_name, credit_code = case.respondent_name, case.respondent_credit_code
    if case.respondent_firm_id is not None:
        firm = await db.get(Firm, case.respondent_firm_id)
        if firm is not None:
            firm_name = firm.name
            credit_code = getattr(firm, "credit_code", None) or credit_code
    respondent = firm_name or "—"
    if credit_code:
        respondent += f"，统一社会信用代码 {credit_code}"
    return [
        Party("claimant", SIDE_LABELS_ZH["claimant"], text),
        Party("respondent", SIDE_LABELS_ZH["respondent"], respondent),
    ]


def _local(moment: datetime) -> str:
    return moment.astimezone(TZ).strftime("%Y-%m-%d %H:%M") + "（北京时间）"


def document(
    case: Case,
    agreement: Agreement,
    version_row: AgreementVersion,
    people: Sequence[Party],
    *,
    signed: Sequence[tuple[AgreementSignature, str]] = (),
    receipt_id: str | None = None,
    verify_url: str | None = None,
) -> AgreementDocument:
    """The PDF's content for one version: without ``signed``, the copy each party signs;
    with them (signature, the signer's typed name), the executed copy."""
    opening, _ = preamble(agreement.template)
    return AgreementDocument(
        title="调解协议书",
        case_number=case.number or f"#{case.id}",
        version=version_row.number,
        parties=[(p.label_zh, p.text) for p in people],
        preamble=opening,
        clauses=list(version_row.clauses_zh),
        closing=CLOSING_ZH,
        required_signers=[SIDE_LABELS_ZH[s] for s in required_sides(case)],
        signatures=[
            Signature(
                party=SIDE_LABELS_ZH[s.side],
                name=name,
                signed_at=_local(s.signed_at),
                method="密码＋一次性验证码＋输入姓名" + ("＋手写签名" if s.drawn else ""),
                drawn=s.drawn,
            )
            for s, name in signed
        ],
        receipt_id=receipt_id,
        verify_url=verify_url,
        created_at=version_row.created_at,
        footer="解纷 · 在线调解平台",
    )


async def stored_pdf(db: AsyncSession, row: AgreementVersion) -> bytes:
    """The PDF a version keeps (the column is deferred, so listing versions reads none)."""
    data = await db.scalar(select(AgreementVersion.pdf).where(AgreementVersion.id == row.id))
    if data is None:
        raise NotFound
    return data


async def version_pdf(db: AsyncSession, found: AgreementAccess, number: int) -> bytes:
    """The PDF of a version as the parties sign it (kept as rendered when it was saved)."""
    return await stored_pdf(db, await version(db, _require(found), number))


async def render(doc: AgreementDocument) -> bytes:
    """Render off the event loop (half a second of CPU, most of it reading the font); a text
    the font cannot show is refused, not printed as empty boxes."""
    try:
        return await anyio.to_thread.run_sync(render_agreement, doc)
    except ValueError as exc:
        raise DomainError(
            _l(
                "The text has characters the agreement's font cannot print: {detail}",
                detail=str(exc),
            )
        ) from None


async def executed_pdf(
    db: AsyncSession, vault: DataVault, found: AgreementAccess, base_url: str
) -> bytes:
    """The agreement in effect, with every signature, its time, and the receipt of the last
    signature's evidence-log entry with a QR code to check it: rendered the first time it is
    asked for, then kept."""
    agreement = _require(found)
    if agreement.status != AgreementStatus.EFFECTIVE:
        raise DomainError(_l("The agreement is not in effect yet."))
    kept = await db.scalar(select(Agreement.signed_pdf).where(Agreement.id == agreement.id))
    if kept is not None:
        return kept
    row = await current(db, agreement)
    live = [s for s in await signatures(db, agreement, live_only=True) if s.version_id == row.id]
    last = max(live, key=lambda s: s.signed_at)
    leaf = await db.get(LogLeaf, last.leaf_id) if last.leaf_id else None
    receipt_id = verify_url = None
    if leaf is not None:
        receipt_id = leaf.hash.hex()
        verify_url = f"{base_url}/evidence/receipts/{receipt_id}.json"
    data = await render(
        document(
            found.case,
            agreement,
            row,
            await parties(db, vault, found.case),
            signed=[(s, s.typed_name) for s in live],
            receipt_id=receipt_id,
            verify_url=verify_url,
        )
    )
    await db.execute(
        update(Agreement)
        .where(Agreement.id == agreement.id, Agreement.signed_pdf.is_(None))
        .values(signed_pdf=data)
        .execution_options(synchronize_session=False)
    )
    await db.commit()
    return data


def readable_diff(old: Sequence[str], new: Sequence[str]) -> list[tuple[str, str]]:
    """Clause by clause: ("same" | "removed" | "added", text)."""
    out: list[tuple[str, str]] = []
    for line in difflib.ndiff(list(old), list(new)):
        tag, text = line[:2], line[2:]
        if tag == "  ":
            out.append(("same", text))
        elif tag == "- ":
            out.append(("removed", text))
        elif tag == "+ ":
            out.append(("added", text))
    return out


# -- drafting -------------------------------------------------------------------------------


def suggested_terms(case: Case, today: date) -> Terms:
    """A first draft from the case: the firm's offer if it made one, else the amount
    claimed, as a refund paid within 15 days; the claimant withdraws related complaints."""
    from portal.agreements.terms import Payment

    amount = case.firm_offer_fen or case.amount_fen or 0
    return Terms(
        refund_fen=amount,
        payments=(Payment(amount, today + timedelta(days=15)),) if amount else (),
        withdraw_complaints=True,
    )


async def _new_version(
    db: AsyncSession,
    vault: DataVault,
    found: AgreementAccess,
    agreement: Agreement,
    actor: User,
    terms: Terms,
    note: str,
) -> AgreementVersion:
    """The next version, with its PDF rendered, not yet added (rendering takes half a second:
    callers do it before they take the agreement's row)."""
    zh, en = clauses(terms, agreement.template)
    row = AgreementVersion(
        agreement_id=agreement.id,
        number=agreement.current_version + 1,
        terms=terms.to_json(),
        clauses_zh=zh,
        clauses_en=en,
        note=note,
        author_id=actor.id,
        created_at=utcnow().replace(microsecond=0),
    )
    row.pdf = await render(
        document(found.case, agreement, row, await parties(db, vault, found.case))
    )
    row.pdf_sha256 = hashlib.sha256(row.pdf).hexdigest()
    row.pdf_size = len(row.pdf)
    return row


async def start(
    db: AsyncSession,
    vault: DataVault,
    found: AgreementAccess,
    actor: User,
    meeting_id: int | None = None,
) -> Agreement:
    """The mediator starts the case's agreement, pre-filled from the case."""
    case = found.case
    if found.agreement is not None:
        return found.agreement
    if case.status != Status.IN_MEDIATION:
        raise DomainError(_l("An agreement is drafted while the case is in mediation."))
    agreement = Agreement(
        case_id=case.id,
        meeting_id=meeting_id,
        template=case.category or "other",
        status=AgreementStatus.DRAFTING.value,
        current_version=0,
    )
    db.add(agreement)
    try:
        await db.flush()
    except IntegrityError:  # started meanwhile (a second click): that one stands
        await db.rollback()
        existing = await db.scalar(select(Agreement).where(Agreement.case_id == case.id))
        if existing is None:
            raise
        return existing
    found = AgreementAccess(case, agreement)
    today = utcnow().astimezone(TZ).date()
    row = await _new_version(db, vault, found, agreement, actor, suggested_terms(case, today), "")
    agreement.current_version = row.number
    db.add(row)
    _timeline(db, case, actor.id, "started")
    record(db, actor.id, "agreement.start", "agreement", agreement.id, case=case.id)
    await db.commit()
    return agreement


def _changeable(agreement: Agreement, case: Case) -> None:
    if agreement.status == AgreementStatus.EFFECTIVE:
        raise DomainError(_l("The agreement is in effect and can no longer be changed."))
    _in_mediation(case)


async def save_version(
    db: AsyncSession,
    vault: DataVault,
    found: AgreementAccess,
    actor: User,
    terms: Terms,
    note: str = "",
) -> AgreementVersion:
    """A new version. Signatures already given are void (the text they bound has changed),
    and everyone is told; the agreement goes back to drafting."""
    agreement = _require(found)
    case = found.case
    _changeable(agreement, case)
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise DomainError(_l("Use at most {count} characters.", count=MAX_NOTE), field="note")
    before = await current(db, agreement)
    if terms.to_json() == before.terms and agreement.status == AgreementStatus.DRAFTING:
        raise DomainError(_l("Nothing has changed since the last version."))
    row = await _new_version(db, vault, found, agreement, actor, terms, note)
    await lock(db, agreement, case)
    _changeable(agreement, case)
    if agreement.current_version + 1 != row.number:
        raise DomainError(
            _l("The agreement was changed meanwhile. Read the new version, then edit it.")
        )
    live = await signatures(db, agreement, live_only=True)
    now = utcnow()
    for signature in live:
        signature.voided_at = now
        signature.void_reason = f"version {row.number}"
    agreement.current_version = row.number
    db.add(row)
    agreement.status = AgreementStatus.DRAFTING.value
    agreement.updated_at = now
    _timeline(db, case, actor.id, "version", version=row.number, voided=len(live))
    record(
        db,
        actor.id,
        "agreement.version",
        "agreement",
        agreement.id,
        version=row.number,
        voided=len(live),
    )
    number = _number(case)
    if live:
        await _tell(
            db,
            case,
            _l("Case {number}: the agreement was changed", number=number),
            _l(
                "The mediator changed the agreement of case {number} after it was signed. "
                "Every signature given is void; read version {version} and sign again.",
                number=number,
                version=row.number,
            ),
            skip=actor.id,
        )
    else:
        await _tell(
            db,
            case,
            _l("Case {number}: a new version of the agreement", number=number),
            _l(
                "The mediator saved version {version} of the agreement of case {number}. "
                "Read it and comment if something is wrong.",
                number=number,
                version=row.number,
            ),
            skip=actor.id,
        )
    await db.commit()
    return row


async def add_comment(
    db: AsyncSession, found: AgreementAccess, actor: User, number: int, body: str
) -> AgreementComment:
    agreement = _require(found)
    row = await version(db, agreement, number)
    body = body.strip()
    if not body:
        raise DomainError(_l("Write a comment."), field="body")
    if len(body) > MAX_COMMENT:
        raise DomainError(_l("Use at most {count} characters.", count=MAX_COMMENT), field="body")
    comment = AgreementComment(version_id=row.id, author_id=actor.id, body=body)
    db.add(comment)
    record(db, actor.id, "agreement.comment", "agreement", agreement.id, version=number)
    number_ = _number(found.case)
    await _tell(
        db,
        found.case,
        _l("Case {number}: a comment on the agreement", number=number_),
        _l(
            "{name} commented on version {version} of the agreement.",
            name=actor.display_name,
            version=number,
        ),
        skip=actor.id,
    )
    await db.commit()
    return comment


async def open_signing(db: AsyncSession, found: AgreementAccess, actor: User) -> None:
    """The mediator puts the current version up for signature."""
    agreement = _require(found)
    await lock(db, agreement, found.case)
    _in_mediation(found.case)
    if agreement.status != AgreementStatus.DRAFTING:
        raise DomainError(_l("The agreement is not being drafted."))
    if found.case.respondent_firm_id is None:
        raise DomainError(
            _l(
                "The firm is not on the platform, so it cannot sign online. Ask the committee "
                "to link the case to the firm's account first."
            )
        )
    today = utcnow().astimezone(TZ).date()
    terms = Terms.from_json((await current(db, agreement)).terms)
    if any(p.due < today for p in terms.payments):
        raise DomainError(
            _l("A payment in this version falls due in the past. Change the dates first.")
        )
    agreement.status = AgreementStatus.SIGNING.value
    agreement.updated_at = utcnow()
    _timeline(db, found.case, actor.id, "signing", version=agreement.current_version)
    record(
        db,
        actor.id,
        "agreement.signing",
        "agreement",
        agreement.id,
        version=agreement.current_version,
    )
    number = _number(found.case)
    await _tell(
        db,
        found.case,
        _l("Case {number}: sign the agreement", number=number),
        _l(
            "Version {version} of the agreement of case {number} is ready. Read it, and sign it "
            "if you agree.",
            version=agreement.current_version,
            number=number,
        ),
        skip=actor.id,
    )
    await db.commit()


# -- signing --------------------------------------------------------------------------------


def _code_digest(settings: Settings, user_id: int, agreement_id: int, code: str) -> str:
    key = derive_key(settings.secret_key, "jiefen/agreement-code")
    return hmac.new(key, f"{user_id}:{agreement_id}:{code}".encode(), hashlib.sha256).hexdigest()


def code_channel(vault: DataVault, user: User) -> str | None:
    """Where a signing code goes: the verified mobile number, else the e-mail address (staff
    and firm accounts are opened from an e-mailed invitation, which proves it)."""
    if user.phone_enc is not None and user.phone_verified_at is not None:
        return "sms"
    if contact_of(vault, user).email:
        return "email"
    return None


def _signer_side(found: AgreementAccess, actor: User) -> str:
    side = side_of(found.case, actor)
    if side is None or side not in required_sides(found.case):
        raise DomainError(_l("You are not one of the parties who sign this agreement."))
    return side


async def _failures(db: AsyncSession, agreement: Agreement, user_id: int, now: datetime) -> int:
    return int(
        await db.scalar(
            select(func.coalesce(func.sum(SigningCode.attempts), 0)).where(
                SigningCode.agreement_id == agreement.id,
                SigningCode.user_id == user_id,
                SigningCode.created_at > now - LOCK_WINDOW,
            )
        )
        or 0
    )


def _ready_to_sign(agreement: Agreement, case: Case) -> None:
    if agreement.status == AgreementStatus.EFFECTIVE:
        raise DomainError(_l("The agreement is already in effect."))
    if agreement.status != AgreementStatus.SIGNING:
        raise DomainError(_l("The agreement is not up for signature yet."))
    _in_mediation(case)


def _in_mediation(case: Case) -> None:
    if case.status != Status.IN_MEDIATION:
        raise DomainError(
            _l("The case is no longer in mediation, so its agreement cannot go ahead.")
        )


async def send_code(
    db: AsyncSession, settings: Settings, vault: DataVault, found: AgreementAccess, actor: User
) -> str:
    """Send a six-digit signing code to the actor's phone or e-mail; returns the channel."""
    agreement = _require(found)
    _ready_to_sign(agreement, found.case)
    _signer_side(found, actor)
    channel = code_channel(vault, actor)
    if channel is None:
        raise DomainError(_l("Verify your mobile number first, so that we can send you a code."))
    now = utcnow()
    if await _failures(db, agreement, actor.id, now) >= MAX_FAILURES:
        raise DomainError(_l("Signing is locked for 30 minutes after 5 wrong tries."))
    latest = await db.scalar(
        select(SigningCode)
        .where(SigningCode.agreement_id == agreement.id, SigningCode.user_id == actor.id)
        .order_by(SigningCode.id.desc())
        .limit(1)
    )
    if latest is not None and latest.used_at is None and now - latest.created_at < CODE_INTERVAL:
        wait = int((CODE_INTERVAL - (now - latest.created_at)).total_seconds()) + 1
        raise DomainError(
            _l("A code was just sent. Wait {seconds} seconds before asking again.", seconds=wait)
        )
    code = f"{secrets.randbelow(1_000_000):06d}"
    db.add(
        SigningCode(
            agreement_id=agreement.id,
            user_id=actor.id,
            channel=channel,
            code_digest=_code_digest(settings, actor.id, agreement.id, code),
            expires_at=now + CODE_TTL,
        )
    )
    await notify(
        db,
        actor.id,
        _l("Signing code"),
        _l(
            "Your code to sign the agreement of case {number} is {code}. It is valid for 10 "
            "minutes. Do not give it to anyone.",
            number=_number(found.case),
            code=code,
        ),
        channels=(channel,),
    )
    record(db, actor.id, "agreement.code_sent", "agreement", agreement.id, channel=channel)
    await db.commit()
    return channel


def _normal_name(name: str) -> str:
    return "".join(name.split()).replace("·", "").replace("•", "")


async def sign(
    db: AsyncSession,
    settings: Settings,
    found: AgreementAccess,
    actor: User,
    *,
    version_number: int,
    password: str,
    code: str,
    typed_name: str,
    drawn: str | None = None,
) -> AgreementSignature:
    """Sign the current version: the password again, the code just sent, and the full name
    typed as the account has it. A wrong password or code counts towards the lock.

    The password and code are checked first (argon2 takes a moment); then the agreement and
    its case are taken and read afresh, and the state they must be in is checked again."""
    agreement = _require(found)
    case = found.case
    _ready_to_sign(agreement, case)
    side = _signer_side(found, actor)
    now = utcnow()
    if await _failures(db, agreement, actor.id, now) >= MAX_FAILURES:
        raise DomainError(_l("Signing is locked for 30 minutes after 5 wrong tries."))
    latest = await db.scalar(
        select(SigningCode)
        .where(
            SigningCode.agreement_id == agreement.id,
            SigningCode.user_id == actor.id,
            SigningCode.used_at.is_(None),
        )
        .order_by(SigningCode.id.desc())
        .limit(1)
    )
    if latest is None or latest.expires_at <= now:
        if latest is not None:  # an old code tried: counted like a wrong one
            latest.attempts += 1
            record(db, actor.id, "agreement.sign_failed", "agreement", agreement.id)
            await db.commit()
        raise DomainError(_l("The code has expired. Ask for a new one."), field="code")
    try:
        PASSWORDS.verify(actor.password_hash, password)
        password_ok = True
    except (VerificationError, InvalidHashError):
        password_ok = False
    code_ok = hmac.compare_digest(
        latest.code_digest, _code_digest(settings, actor.id, agreement.id, code.strip())
    )
    if not (password_ok and code_ok):
        latest.attempts += 1
        record(db, actor.id, "agreement.sign_failed", "agreement", agreement.id)
        await db.flush()
        left = MAX_FAILURES - await _failures(db, agreement, actor.id, now)
        await db.commit()
        if not password_ok:
            raise DomainError(_l("Your password is wrong."), field="password")
        if left <= 0:
            raise DomainError(
                _l("Signing is locked for 30 minutes after 5 wrong tries."), field="code"
            )
        raise DomainError(_l("The code is wrong. {count} tries left.", count=left), field="code")
    if _normal_name(typed_name) != _normal_name(actor.display_name) or not typed_name.strip():
        raise DomainError(
            _l("Type your full name exactly as your account gives it."), field="typed_name"
        )
    if missing := unprintable(typed_name):
        raise DomainError(
            _l(
                "Your name has a character the agreement's font cannot print ({characters}). "
                "Ask the mediator to sign on paper with you.",
                characters="".join(missing),
            ),
            field="typed_name",
        )
    if drawn is not None:
        try:
            drawn_strokes(drawn)
        except ValueError:
            raise DomainError(
                _l("The drawn signature could not be read. Draw it again."), field="drawn"
            ) from None
    await lock(db, agreement, case)
    _ready_to_sign(agreement, case)
    if version_number != agreement.current_version:
        raise DomainError(
            _l(
                "Version {version} has been replaced by version {current}. Read the new "
                "version before you sign.",
                version=version_number,
                current=agreement.current_version,
            )
        )
    row = await current(db, agreement)
    live = await signatures(db, agreement, live_only=True)
    if any(s.side == side and s.version_id == row.id for s in live):
        raise DomainError(_l("Your side has already signed this version."))
    if await db.scalar(select(SigningCode.used_at).where(SigningCode.id == latest.id)):
        raise DomainError(_l("The code has expired. Ask for a new one."), field="code")
    data = await stored_pdf(db, row)
    digest = hashlib.sha256(data).hexdigest()
    latest.used_at = now
    method = (METHOD_DRAWN if drawn else METHOD_TYPED).format(channel=latest.channel)
    signature = AgreementSignature(
        agreement_id=agreement.id,
        version_id=row.id,
        user_id=actor.id,
        side=side,
        typed_name=typed_name.strip(),
        method=method,
        drawn=drawn,
        pdf_sha256=digest,
        signed_at=now,
    )
    db.add(signature)
    body = agreement_signature_body(
        sha256=digest,
        size=len(data),
        case_id=case.id,
        agreement=agreement.id,
        version=row.number,
        side=side,
        signer=await commitment(db, actor.id) or "0" * 64,
        method=method,
    )
    if case.number:
        leaf = await stage_leaf(
            db, AGREEMENT_SIGNATURE, body, case_id=case.id, case_number=case.number, time=now
        )
        signature.leaf_id = leaf.id
    _timeline(db, case, actor.id, "signed", version=row.number, side=side)
    record(db, actor.id, "agreement.sign", "agreement", agreement.id, version=row.number, side=side)
    await db.flush()
    signed_sides = {s.side for s in [*live, signature] if s.version_id == row.id}
    number = _number(case)
    if signed_sides >= set(required_sides(case)):
        await _take_effect(db, found, agreement, row, actor, now)
    else:
        await _tell(
            db,
            case,
            _l("Case {number}: the agreement was signed", number=number),
            _l(
                "{side} signed version {version} of the agreement of case {number}.",
                side={"msgid": SIDE_LABELS[side].msgid},
                version=row.number,
                number=number,
            ),
            skip=actor.id,
        )
    await db.commit()
    return signature


async def _take_effect(
    db: AsyncSession,
    found: AgreementAccess,
    agreement: Agreement,
    row: AgreementVersion,
    actor: User,
    now: datetime,
) -> None:
    case = found.case
    agreement.status = AgreementStatus.EFFECTIVE.value
    agreement.effective_at = now
    terms = Terms.from_json(row.terms)
    for n, payment in enumerate(terms.payments, start=1):
        db.add(
            Instalment(
                agreement_id=agreement.id,
                number=n,
                amount_fen=payment.amount_fen,
                due_on=payment.due,
            )
        )
    # What the case recovered and waived, for the oversight figures (portal.analytics).
    case.agreed_fen = terms.total_fen
    case.waived_fen = terms.fee_waiver_fen + terms.interest_waiver_fen
    _timeline(db, case, actor.id, "effective", version=row.number)
    record(db, actor.id, "agreement.effective", "agreement", agreement.id, version=row.number)
    await cases.settle_by_agreement(db, case, actor)
    if not terms.payments:
        await cases.fulfil_by_agreement(db, case, actor)
    number = _number(case)
    await _tell(
        db,
        case,
        _l("Case {number}: the agreement is in effect", number=number),
        _l(
            "Every party has signed the agreement of case {number}; it is now in effect. "
            "Download the signed copy from the case page.",
            number=number,
        ),
    )


# -- fulfilment -----------------------------------------------------------------------------


async def instalments(db: AsyncSession, agreement: Agreement) -> list[Instalment]:
    return list(
        await db.scalars(
            select(Instalment)
            .where(Instalment.agreement_id == agreement.id)
            .order_by(Instalment.number)
        )
    )


async def _instalment(db: AsyncSession, agreement: Agreement, number: int) -> Instalment:
    found = await db.scalar(
        select(Instalment).where(
            Instalment.agreement_id == agreement.id, Instalment.number == number
        )
    )
    if found is None:
        raise NotFound
    return found


def overdue(instalment: Instalment, today: date) -> bool:
    return instalment.state == InstalmentState.DUE and instalment.due_on < today


async def record_payment(
    db: AsyncSession,
    found: AgreementAccess,
    actor: User,
    number: int,
    *,
    amount: str,
    paid_on: str,
    reference: str = "",
) -> Instalment:
    """The firm says it paid an instalment: the amount must be the instalment's."""
    agreement = _require(found)
    await lock(db, agreement)
    if agreement.status != AgreementStatus.EFFECTIVE:
        raise DomainError(_l("The agreement is not in effect yet."))
    row = await _instalment(db, agreement, number)
    if row.state not in (InstalmentState.DUE, InstalmentState.DISPUTED):
        raise DomainError(_l("This payment has already been recorded."))
    fen = parse_fen(amount, "amount")
    if fen != row.amount_fen:
        raise DomainError(
            _l(
                "Payment {number} is {amount} yuan under the agreement; record exactly that.",
                number=number,
                amount=yuan(row.amount_fen),
            ),
            field="amount",
        )
    try:
        day = date.fromisoformat(paid_on.strip())
    except ValueError:
        raise DomainError(_l("Enter a date as YYYY-MM-DD."), field="paid_on") from None
    today = utcnow().astimezone(TZ).date()
    if day > today:
        raise DomainError(_l("The date is in the future."), field="paid_on")
    reference = reference.strip()
    if len(reference) > 100:
        raise DomainError(_l("Use at most {count} characters.", count=100), field="reference")
    row.state = InstalmentState.PAID.value
    row.paid_fen, row.paid_on, row.reference = fen, day, reference
    row.recorded_by, row.recorded_at = actor.id, utcnow()
    row.dispute_reason = ""
    _timeline(db, found.case, actor.id, "paid", instalment=number, amount=yuan(fen))
    record(db, actor.id, "agreement.payment", "agreement", agreement.id, instalment=number)
    await notify(
        db,
        found.case.filer_id,
        _l("Case {number}: a payment was made", number=_number(found.case)),
        _l(
            "The firm says it paid {amount} yuan (payment {instalment}) on {day}. Confirm "
            "when it has arrived, or say that it has not.",
            amount=yuan(fen),
            instalment=number,
            day=day.isoformat(),
        ),
        link=_case_link(found.case),
    )
    await db.commit()
    return row


async def answer_payment(
    db: AsyncSession,
    found: AgreementAccess,
    actor: User,
    number: int,
    *,
    received: bool,
    reason: str = "",
) -> Instalment:
    """The claimant confirms a recorded payment arrived, or disputes it with a reason. When
    every payment is confirmed the case is fulfilled and closed."""
    agreement = _require(found)
    await lock(db, agreement)
    row = await _instalment(db, agreement, number)
    if row.state != InstalmentState.PAID:
        raise DomainError(_l("There is no recorded payment to answer."))
    reason = reason.strip()
    if not received and not reason:
        raise DomainError(_l("Say what is wrong with the payment."), field="reason")
    row.state = (InstalmentState.CONFIRMED if received else InstalmentState.DISPUTED).value
    row.answered_at = utcnow()
    row.dispute_reason = "" if received else reason[:2000]
    action = "payment_confirmed" if received else "payment_disputed"
    _timeline(db, found.case, actor.id, action, instalment=number)
    record(db, actor.id, f"agreement.{action}", "agreement", agreement.id, instalment=number)
    case = found.case
    if not received:
        await _tell(
            db,
            case,
            _l("Case {number}: a payment is disputed", number=_number(case)),
            _l(
                "The claimant says payment {instalment} has not arrived as recorded: {reason}",
                instalment=number,
                reason=row.dispute_reason,
            ),
            skip=actor.id,
        )
    elif all(i.state == InstalmentState.CONFIRMED for i in await instalments(db, agreement)):
        await cases.fulfil_by_agreement(db, case, actor)
        await _tell(
            db,
            case,
            _l("Case {number}: the agreement is carried out", number=_number(case)),
            _l(
                "Every payment under the agreement of case {number} has arrived. The case is "
                "closed. Please tell us how it went.",
                number=_number(case),
            ),
        )
    await db.commit()
    return row
