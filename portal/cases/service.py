"""Cases: filing, review, triage, assignment, firm response, messages, listing.

Every user-visible change is one function here. Each writes a timeline event (and an audit
event) in its own transaction and queues notifications in the same transaction (the outbox), so
people are told only about changes that committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, column, func, literal_column, or_, select, text, update
from sqlalchemy import table as sa_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.analytics import likeness
from portal.audit.service import record
from portal.cases.lifecycle import (
    OPEN_STATUSES,
    STATUS_LABELS,
    TRANSITIONS,
    Party,
    Status,
    Transition,
    available,
    transition_for,
)
from portal.cases.models import (
    Case,
    CaseCounter,
    CaseEvent,
    CaseMaterial,
    CaseRules,
    ImportBatch,
    RecusalRequest,
)
from portal.crypto import DataVault
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence import service as evidence
from portal.i18n import Msg, _l, format_money
from portal.notify.service import notify
from portal.orgs.categories import CATEGORIES
from portal.orgs.models import Committee, Firm, MediatorProfile
from portal.policy import Identity, Role
from portal.search import bigram_set, fts_phrase
from portal.workdays.service import WorkCalendar, load_calendar

TZ = ZoneInfo("Asia/Shanghai")

OUTCOMES: dict[str, Msg] = {
    "refund": _l("Refund"),
    "compensation": _l("Compensation"),
    "waiver": _l("Waiver of fees or interest"),
    "instalments": _l("Instalment plan"),
    "apology": _l("Apology"),
    "other": _l("Other outcome"),
}

ELIGIBILITY_QUESTIONS: dict[str, Msg] = {
    "in_court": _l("Is this dispute already before a court?"),
    "in_arbitration": _l("Is it already before an arbitration body?"),
    "other_mediator": _l("Is another mediation organisation already handling it?"),
    "has_decision": _l("Is there already an effective agreement, award or judgment on it?"),
    "settled": _l("Was it already settled, and the settlement carried out?"),
}

ELIGIBILITY_ADVICE: dict[str, Msg] = {
    "in_court": _l(
        "A dispute already before a court is handled there. You can ask the court about "
        "court-referred mediation (委派调解)."
    ),
    "in_arbitration": _l("A dispute already before an arbitration body is decided there."),
    "other_mediator": _l(
        "Another organisation is already mediating this dispute. Wait for its result; if it "
        "fails, you may file here."
    ),
    "has_decision": _l(
        "An effective judgment, arbitral award or judicially confirmed agreement already "
        "exists. If it is not carried out, you can apply to the court for enforcement."
    ),
    "settled": _l("A dispute that was settled and carried out cannot be mediated again."),
}

MATERIAL_KINDS: dict[str, Msg] = {
    "identity": _l("Identity proof"),
    "contract": _l("Key contract or receipt"),
    "power_of_attorney": _l("Power of attorney"),
    "requested": _l("Requested material"),
    "evidence": _l("Evidence"),
    "other": _l("Other material"),
    "recording": _l("Session recording"),
}
# Kinds made by the portal itself, never chosen on an upload form.
GENERATED_KINDS = frozenset({"recording"})

PERSONAL_MATERIALS = frozenset({"identity", "power_of_attorney"})

VISIBILITIES: dict[str, Msg] = {
    "parties": _l("Both parties and the mediator"),
    "mediator": _l("The mediator only"),
}

PARTIES: dict[str, Msg] = {
    "claimant": _l("Claimant"),
    "respondent": _l("Firm"),
    "committee": _l("Committee"),
}

REQUESTABLE_ITEMS: dict[str, Msg] = {
    "identity": _l("A clearer copy of the identity proof"),
    "contract": _l("The contract, receipt or order"),
    "payment_records": _l("Payment or transfer records"),
    "communications": _l("Chat records, emails or call recordings with the firm"),
    "power_of_attorney": _l("A signed power of attorney"),
    "other": _l("Other material described in the note"),
}

RESPONSES: dict[str, Msg] = {
    "agree": _l("Agrees to mediate"),
    "propose": _l("Proposes a settlement"),
    "decline": _l("Declines to mediate"),
}


# -- who is who -----------------------------------------------------------------------------


def parties_of(case: Case, who: Identity) -> set[Party]:
    found: set[Party] = set()
    if who.user_id is None:
        return found
    if who.user_id == case.filer_id:
        found.add(Party.CLAIMANT)
    if who.role == Role.COMMITTEE_ADMIN and who.committee_id == case.committee_id:
        found.add(Party.STAFF)
    if case.mediator_id is not None and who.user_id == case.mediator_id:
        found.add(Party.MEDIATOR)
    if (
        who.role == Role.FIRM_REP
        and case.respondent_firm_id is not None
        and who.firm_id == case.respondent_firm_id
        and case.status != Status.DRAFT
    ):
        found.add(Party.RESPONDENT)
    return found


def actions_for(case: Case, who: Identity) -> list[Transition]:
    return available(Status(case.status), parties_of(case, who))


def today_in_china(now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(TZ).date()


async def _committee_staff(db: AsyncSession, committee_id: int) -> list[int]:
    rows = await db.scalars(
        select(User.id).where(
            User.committee_id == committee_id,
            User.role == Role.COMMITTEE_ADMIN.value,
            User.is_active.is_(True),
        )
    )
    return list(rows)


async def _firm_reps(db: AsyncSession, firm_id: int | None) -> list[int]:
    if firm_id is None:
        return []
    rows = await db.scalars(
        select(User.id).where(
            User.firm_id == firm_id, User.role == Role.FIRM_REP.value, User.is_active.is_(True)
        )
    )
    return list(rows)


async def _tell(
    db: AsyncSession,
    user_ids: Sequence[int | None],
    case: Case,
    title: Msg,
    body: Msg,
    skip: int | None = None,
) -> None:
    for user_id in dict.fromkeys(user_ids):
        if user_id is not None and user_id != skip:
            await notify(db, user_id, title, body, link=f"/cases/{case.id}")


def _event(
    db: AsyncSession,
    case: Case,
    actor_id: int | None,
    kind: str,
    *,
    before: str | None = None,
    after: str | None = None,
    body: str = "",
    visibility: str = "all",
    **data: Any,
) -> CaseEvent:
    event = CaseEvent(
        created_at=utcnow(),
        case_id=case.id,
        actor_id=actor_id,
        kind=kind,
        from_status=before,
        to_status=after,
        body=body,
        visibility=visibility,
        data=data,
    )
    db.add(event)
    return event


async def _move(
    db: AsyncSession, case: Case, actor: User, transition: Transition, reason: str = "", **data: Any
) -> None:
    """Apply a transition the caller has checked: status, timeline, audit and, once the case
    has a number, its evidence-log leaf, all in the caller's transaction."""
    before = case.status
    case.status = transition.target.value
    case.updated_at = utcnow()
    if case.outcome is None and transition.target in ENDINGS:
        await _record_outcome(db, case)
    event = _event(
        db,
        case,
        actor.id,
        "transition",
        before=before,
        after=case.status,
        body=reason.strip(),
        transition=transition.name,
        **data,
    )
    record(db, actor.id, f"case.{transition.name}", "case", case.id, **{"from": before})
    if case.number:
        await evidence.log_event(db, case, event)


# The statuses that say how a case ended, for the oversight figures (Case.outcome).
ENDINGS = frozenset(
    {Status.SETTLED, Status.FAILED, Status.WITHDRAWN, Status.REJECTED, Status.INELIGIBLE}
)


async def _record_outcome(db: AsyncSession, case: Case) -> None:
    """How and when the case ended, and the working days it took (from acceptance, else from
    submission, to today in China, less the days it was paused for the claimant's material)."""
    case.outcome = case.status
    case.outcome_at = utcnow()
    started = case.accepted_at or case.submitted_at
    if started is not None:
        calendar = await _calendar(db)
        days = calendar.working_days_between(today_in_china(started), today_in_china())
        case.handling_days = max(0, days - (case.paused_working_days or 0))


def _check(case: Case, who: Identity, name: str, reason: str = "") -> Transition:
    return transition_for(name, Status(case.status), parties_of(case, who), reason)


# -- reading --------------------------------------------------------------------------------


async def get_case(db: AsyncSession, case_id: int) -> Case:
    case = await db.get(Case, case_id)
    if case is None:
        raise NotFound
    return case


@dataclass
class ClaimantView:
    """The claimant's and agent's personal data, decrypted for people allowed to see it."""

    name: str = ""
    id_number: str = ""
    phone: str = ""
    agent_name: str = ""
    agent_phone: str = ""

    @property
    def id_masked(self) -> str:
        from portal.validators import mask_resident_id

        return mask_resident_id(self.id_number) if self.id_number else ""

    @property
    def phone_masked(self) -> str:
        from portal.accounts.service import mask_phone

        return mask_phone(self.phone) if self.phone else ""


def claimant_of(vault: DataVault, case: Case) -> ClaimantView:
    def dec(blob: bytes | None, context: str) -> str:
        return vault.decrypt(blob, context) if blob else ""

    return ClaimantView(
        name=dec(case.claimant_name_enc, "cases.claimant_name"),
        id_number=dec(case.claimant_id_enc, "cases.claimant_id"),
        phone=dec(case.claimant_phone_enc, "cases.claimant_phone"),
        agent_name=dec(case.agent_name_enc, "cases.agent_name"),
        agent_phone=dec(case.agent_phone_enc, "cases.agent_phone"),
    )


@dataclass(frozen=True)
class IdentityView:
    at: datetime
    name: str
    role: str
    via: str
    fields: list[str]


async def identity_views(db: AsyncSession, case: Case, limit: int = 20) -> list[IdentityView]:
    """Who has seen the case's identity data, latest first (from the audit trail)."""
    from portal.audit.models import AuditEvent
    from portal.audit.service import PERSONAL_DATA_VIEWED

    rows = await db.execute(
        select(AuditEvent.created_at, User.display_name, User.role, AuditEvent.detail)
        .join(User, User.id == AuditEvent.actor_id)
        .where(
            AuditEvent.action == PERSONAL_DATA_VIEWED,
            AuditEvent.object_type == "case",
            AuditEvent.object_id == str(case.id),
        )
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    return [
        IdentityView(at, name, role, str(detail.get("via", "")), list(detail.get("fields", [])))
        for at, name, role, detail in rows
    ]


async def timeline(db: AsyncSession, case: Case, who: Identity) -> list[CaseEvent]:
    parties = parties_of(case, who)
    query = select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
    events = list(await db.scalars(query))
    if parties & {Party.STAFF, Party.MEDIATOR} or who.role == Role.PLATFORM_ADMIN:
        return events
    allowed = {"all"}
    if Party.CLAIMANT in parties:
        allowed.add("claimant")
    if Party.RESPONDENT in parties:
        allowed.add("firm")
    return [e for e in events if e.visibility in allowed]


async def materials(db: AsyncSession, case: Case) -> list[CaseMaterial]:
    return list(
        await db.scalars(
            select(CaseMaterial).where(CaseMaterial.case_id == case.id).order_by(CaseMaterial.id)
        )
    )


async def rules_for(db: AsyncSession, committee_id: int) -> CaseRules:
    rules = await db.get(CaseRules, committee_id)
    return rules or CaseRules(
        committee_id=committee_id,
        simple_max_amount_fen=5_000_000,
        simple_categories=[
            "credit_card",
            "small_loan",
            "small_business_loan",
            "personal_business_loan",
        ],
        agent_is_complex=True,
        firm_response_days=5,
        simple_close_days=15,
        complex_close_days=30,
    )


# -- filing ---------------------------------------------------------------------------------


async def route_committee(db: AsyncSession, category: str, region: str = "") -> Committee:
    """The committee that takes this category, preferring one whose region matches."""
    committees = list(await db.scalars(select(Committee).order_by(Committee.id)))
    takers = [c for c in committees if category in (c.categories or [])]
    if not takers:
        raise DomainError(
            _l("No committee takes disputes of this kind yet. Choose another category."),
            field="category",
        )
    if region:
        for committee in takers:
            if region in committee.region or committee.region in region:
                return committee
    return takers[0]


async def start_draft(
    db: AsyncSession,
    filer: User,
    *,
    category: str,
    region: str,
    firm_id: int | None,
    respondent_name: str,
    respondent_credit_code: str | None,
    form_key: str,
    ip: str,
) -> Case:
    """Step one of the wizard: what kind of dispute, against whom. Idempotent per form."""
    existing = await db.scalar(select(Case).where(Case.form_key == form_key))
    if existing is not None:
        if existing.filer_id != filer.id:
            raise NotFound
        return existing
    if category not in CATEGORIES:
        raise DomainError(_l("Choose one of the options."), field="category")
    committee = await route_committee(db, category, region)
    firm = await db.get(Firm, firm_id) if firm_id else None
    if firm_id and firm is None:
        raise DomainError(_l("Choose one of the options."), field="firm_id")
    if firm is None and not respondent_name:
        raise DomainError(
            _l("Choose the firm, or give the name of a firm that is not listed."),
            field="respondent_name",
        )
    if firm is None and respondent_credit_code:
        # A registered firm typed by hand is linked to its record.
        firm = await db.scalar(select(Firm).where(Firm.credit_code == respondent_credit_code))
    case = Case(
        committee_id=committee.id,
        filer_id=filer.id,
        category=category,
        respondent_firm_id=firm.id if firm else None,
        respondent_name=firm.name if firm else respondent_name,
        respondent_credit_code=firm.credit_code if firm else respondent_credit_code,
        form_key=form_key,
        filing_ip=ip[:45],
        filed_as="self",
    )
    db.add(case)
    await db.flush()
    _event(db, case, filer.id, "transition", after=Status.DRAFT.value, transition="create")
    record(db, filer.id, "case.create", "case", case.id, category=category)
    await db.commit()
    return case


def _require_draft(case: Case, who: Identity) -> None:
    if Party.CLAIMANT not in parties_of(case, who):
        raise NotFound
    if case.status != Status.DRAFT:
        raise DomainError(_l("This case has been submitted and can no longer be edited."))


async def save_claimant(
    db: AsyncSession,
    vault: DataVault,
    case: Case,
    filer: User,
    *,
    filed_as: str,
    name: str,
    id_number: str,
    agent_name: str = "",
    agent_phone: str = "",
    agent_org: str = "",
    claimant_phone: str = "",
) -> None:
    who = Identity(user_id=filer.id, role=Role(filer.role))
    _require_draft(case, who)
    case.filed_as = filed_as
    case.claimant_name_enc = vault.encrypt(name, "cases.claimant_name")
    case.claimant_name_index = vault.blind_index("person_name", name)
    case.claimant_id_enc = vault.encrypt(id_number, "cases.claimant_id")
    case.claimant_id_index = vault.blind_index("resident_id", id_number)
    if claimant_phone:
        case.claimant_phone_enc = vault.encrypt(claimant_phone, "cases.claimant_phone")
        case.claimant_phone_index = vault.blind_index("phone", claimant_phone)
    if filed_as == "agent":
        case.agent_name_enc = vault.encrypt(agent_name, "cases.agent_name")
        case.agent_phone_enc = vault.encrypt(agent_phone, "cases.agent_phone")
        case.agent_phone_index = vault.blind_index("phone", agent_phone)
        case.agent_org = agent_org
    else:
        case.agent_name_enc = case.agent_phone_enc = case.agent_phone_index = None
        case.agent_org = ""
    case.updated_at = utcnow()
    record(db, filer.id, "case.edit", "case", case.id, step="claimant", filed_as=filed_as)
    await db.commit()


async def save_claims(
    db: AsyncSession,
    case: Case,
    filer: User,
    *,
    amount_fen: int,
    outcomes: list[str],
    facts: str,
    incident_date: date | None,
) -> None:
    _require_draft(case, Identity(user_id=filer.id, role=Role(filer.role)))
    if not outcomes or any(o not in OUTCOMES for o in outcomes):
        raise DomainError(_l("Choose at least one outcome you ask for."), field="outcomes")
    case.amount_fen, case.outcomes, case.facts = amount_fen, outcomes, facts
    case.incident_date = incident_date
    case.updated_at = utcnow()
    record(db, filer.id, "case.edit", "case", case.id, step="claims")
    await db.commit()


def ineligible_reasons(case: Case) -> list[str]:
    return [key for key in ELIGIBILITY_QUESTIONS if case.eligibility.get(key) is True]


async def save_eligibility(
    db: AsyncSession, case: Case, filer: User, answers: dict[str, bool]
) -> list[str]:
    """Record the declarations; return the exclusions that apply (empty: eligible)."""
    _require_draft(case, Identity(user_id=filer.id, role=Role(filer.role)))
    if set(answers) != set(ELIGIBILITY_QUESTIONS):
        raise DomainError(_l("Answer every question."), field="eligibility")
    case.eligibility = dict(answers)
    case.updated_at = utcnow()
    record(db, filer.id, "case.edit", "case", case.id, step="eligibility")
    await db.commit()
    return ineligible_reasons(case)


def party_of_uploader(case: Case, actor: User) -> str:
    """Whose evidence an upload is: the claimant's side, the firm's, or the committee's."""
    if actor.role == Role.FIRM_REP:
        return "respondent"
    if actor.id == case.filer_id:
        return "claimant"
    return "committee"


@dataclass(frozen=True)
class NewMaterial:
    filename: str
    content_type: str
    size: int
    sha256: str
    title: str = ""


async def add_materials(
    db: AsyncSession,
    case: Case,
    actor: User,
    files: Sequence[NewMaterial],
    *,
    kind: str,
    description: str = "",
    visibility: str = "parties",
) -> list[CaseMaterial]:
    """Attach several stored files at once: all are added, or none (one commit)."""
    if kind in GENERATED_KINDS:
        raise DomainError(_l("Choose one of the options."), field="kind")
    added = [
        await add_material(
            db,
            case,
            actor,
            kind=kind,
            filename=f.filename,
            content_type=f.content_type,
            size=f.size,
            sha256=f.sha256,
            title=f.title,
            description=description,
            visibility=visibility,
            commit=False,
        )
        for f in files
    ]
    await db.commit()
    return added


async def add_material(
    db: AsyncSession,
    case: Case,
    actor: User,
    *,
    kind: str,
    filename: str,
    content_type: str,
    size: int,
    sha256: str,
    title: str = "",
    description: str = "",
    visibility: str = "parties",
    party: str | None = None,
    commit: bool = True,
) -> CaseMaterial:
    """Attach a stored file to the case; once the case has a number, its evidence.added leaf
    is written in the same transaction. The same file twice in a case is refused."""
    if kind not in MATERIAL_KINDS:
        raise DomainError(_l("Choose one of the options."), field="kind")
    if visibility not in VISIBILITIES:
        raise DomainError(_l("Choose one of the options."), field="visibility")
    title, description = title.strip(), description.strip()
    if len(title) > 200 or len(description) > 2000:
        raise DomainError(_l("The title or description is too long."), field="title")
    same = await db.scalar(
        select(CaseMaterial).where(CaseMaterial.case_id == case.id, CaseMaterial.sha256 == sha256)
    )
    if same is not None:
        raise DomainError(
            _l(
                "This file is already in the case as “{name}”.",
                name=same.title or same.filename,
            ),
            field="file",
        )
    material = CaseMaterial(
        case_id=case.id,
        kind=kind,
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=sha256,
        uploaded_by_id=actor.id,
        created_at=utcnow(),
        title=title,
        description=description,
        party=party or party_of_uploader(case, actor),
        visibility=visibility,
    )
    db.add(material)
    await db.flush()
    if case.number:
        await evidence.log_material(db, case, material)
    if case.status != Status.DRAFT:
        _event(
            db,
            case,
            actor.id,
            "material",
            body=title or filename,
            visibility=_material_event_visibility(material),
            kind_=kind,
            material_id=material.id,
        )
    record(db, actor.id, "case.material_add", "case", case.id, material=material.id, kind=kind)
    if commit:
        await db.commit()
    return material


def _material_event_visibility(material: CaseMaterial) -> str:
    """Who sees "file added" on the timeline: whoever may see the file itself."""
    hidden = material.visibility == "mediator"
    if material.party == "respondent":
        return "firm" if hidden else "all"
    if material.party == "claimant":
        return "claimant" if hidden or material.kind in PERSONAL_MATERIALS else "all"
    return "staff" if hidden else ("claimant" if material.kind in PERSONAL_MATERIALS else "all")


async def referenced_blobs(db: AsyncSession, shas: set[str]) -> list[str]:
    """Which of these file hashes some material refers to."""
    rows = await db.scalars(
        select(CaseMaterial.sha256).where(CaseMaterial.sha256.in_(sorted(shas))).distinct()
    )
    return list(rows)


async def remove_material(db: AsyncSession, case: Case, actor: User, material_id: int) -> str:
    """Remove a material from a draft; returns its sha256 so storage can drop the blob."""
    _require_draft(case, Identity(user_id=actor.id, role=Role(actor.role)))
    material = await db.get(CaseMaterial, material_id)
    if material is None or material.case_id != case.id:
        raise NotFound
    await db.delete(material)
    record(db, actor.id, "case.material_remove", "case", case.id, material=material_id)
    await db.commit()
    return material.sha256


def missing_for_submission(case: Case, kinds: set[str], filer: User) -> list[Msg]:
    """What still stops this draft from being submitted, in words for the filer."""
    missing: list[Msg] = []
    if not case.category or (not case.respondent_firm_id and not case.respondent_name):
        missing.append(_l("The dispute's category and the firm"))
    if not case.claimant_name_enc or not case.claimant_id_enc:
        missing.append(_l("The claimant's name and ID number"))
    if not case.amount_fen or not case.facts or not case.outcomes:
        missing.append(_l("The amount, the outcome asked for and the facts"))
    if set(case.eligibility) != set(ELIGIBILITY_QUESTIONS):
        missing.append(_l("The answers about courts, arbitration and earlier settlements"))
    elif ineligible_reasons(case):
        missing.append(_l("This dispute cannot be mediated here (see the answers above)"))
    if "identity" not in kinds:
        missing.append(_l("Identity proof"))
    if "contract" not in kinds:
        missing.append(_l("Key contract or receipt"))
    if case.filed_as == "agent" and "power_of_attorney" not in kinds:
        missing.append(_l("Power of attorney"))
    if filer.phone_index is None or filer.phone_verified_at is None:
        missing.append(_l("A verified mobile number on your account"))
    return missing


async def likely_duplicate(db: AsyncSession, case: Case) -> Case | None:
    """An open case of the same claimant against the same firm."""
    if case.claimant_id_index is None:
        return None
    same_firm = (
        Case.respondent_firm_id == case.respondent_firm_id
        if case.respondent_firm_id is not None
        else Case.respondent_credit_code == case.respondent_credit_code
        if case.respondent_credit_code
        else Case.respondent_name == case.respondent_name
    )
    return await db.scalar(
        select(Case)
        .where(
            Case.id != case.id,
            Case.claimant_id_index == case.claimant_id_index,
            Case.status.in_([s.value for s in OPEN_STATUSES]),
            same_firm,
        )
        .order_by(Case.id)
        .limit(1)
    )


async def next_case_number(db: AsyncSession, committee: Committee, year: int) -> str:
    """PT-2026-000123: gap-free per committee and year.

    The counter row is updated (and so locked on PostgreSQL) inside the filing transaction: a
    concurrent filing waits for it, and a filing that rolls back gives its number back.
    """
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    await db.execute(
        insert(CaseCounter)
        .values(committee_id=committee.id, year=year, last=0)
        .on_conflict_do_nothing(index_elements=["committee_id", "year"])
    )
    number = await db.scalar(
        update(CaseCounter)
        .where(CaseCounter.committee_id == committee.id, CaseCounter.year == year)
        .values(last=CaseCounter.last + 1)
        .returning(CaseCounter.last)
    )
    assert number is not None
    return f"{committee.case_prefix}-{year}-{number:06d}"


async def submit_case(
    db: AsyncSession,
    vault: DataVault,
    case: Case,
    filer: User,
    likeness_index: likeness.LikenessIndex | None = None,
) -> Case:
    who = Identity(user_id=filer.id, role=Role(filer.role))
    transition = _check(case, who, "submit")
    kinds = {m.kind for m in await materials(db, case)}
    missing = missing_for_submission(case, kinds, filer)
    if missing:
        raise DomainError(_l("Some required parts are missing; see the list on this page."))
    committee = await db.get(Committee, case.committee_id)
    assert committee is not None
    now = utcnow()
    case.number = await next_case_number(db, committee, today_in_china(now).year)
    if case.filed_as == "self" and filer.phone_enc is not None:
        case.claimant_phone_enc = vault.encrypt(
            vault.decrypt(filer.phone_enc, "users.phone"), "cases.claimant_phone"
        )
        case.claimant_phone_index = filer.phone_index
    duplicate = await likely_duplicate(db, case)
    case.duplicate_of_id = duplicate.id if duplicate else None
    case.submitted_at = now
    await _move(db, case, filer, transition, number=case.number)
    for material in await materials(db, case):
        await evidence.log_material(db, case, material)
    await _tell(
        db,
        await _committee_staff(db, case.committee_id),
        case,
        _l("New filing {number}"),
        _l("A new dispute {number} is waiting for review.", number=case.number),
    )
    await notify(
        db,
        filer.id,
        _l("Case {number} submitted", number=case.number),
        _l(
            "We received your application {number}. The committee will review it and tell you "
            "the result.",
            number=case.number,
        ),
        link=f"/cases/{case.id}",
    )
    # Template-complaint check (oversight): the filing's fingerprint and its nearest alike
    # filings, in this transaction. It informs staff and never stops a filing.
    await likeness.check_filing(db, likeness_index, case)
    await db.commit()
    return case


# -- review ---------------------------------------------------------------------------------


def triage(case: Case, rules: CaseRules) -> tuple[str, list[list[Any]]]:
    """Simple or complex (繁简分流), with the reasons a person can read."""
    reasons: list[list[Any]] = []
    limit = rules.simple_max_amount_fen
    if case.amount_fen is not None and case.amount_fen > limit:
        reasons.append(
            [
                "The amount {amount} is above the simple-case limit of {limit}.",
                {"amount": format_money(case.amount_fen), "limit": format_money(limit)},
            ]
        )
    if case.category not in rules.simple_categories:
        reasons.append(["This category of dispute is handled as complex.", {}])
    if rules.agent_is_complex and case.filed_as == "agent":
        reasons.append(["The case was filed by an agent.", {}])
    if reasons:
        return "complex", reasons
    return "simple", [
        [
            "Amount within the limit of {limit}, a category handled in bulk, filed by the claimant.",  # noqa: E501
            {"limit": format_money(limit)},
        ]
    ]


TRIAGE_MESSAGES = [
    _l("The amount {amount} is above the simple-case limit of {limit}."),
    _l("This category of dispute is handled as complex."),
    _l("The case was filed by an agent."),
    _l("Amount within the limit of {limit}, a category handled in bulk, filed by the claimant."),
]


async def _calendar(db: AsyncSession) -> WorkCalendar:
    return await load_calendar(db)


async def accept_case(db: AsyncSession, case: Case, actor: User) -> Case:
    transition = _check(case, _identity(actor), "accept")
    rules = await rules_for(db, case.committee_id)
    calendar = await _calendar(db)
    today = today_in_china()
    case.complexity, case.triage_reasons = triage(case, rules)
    case.accepted_at = utcnow()
    case.firm_response_due = calendar.add_working_days(today, rules.firm_response_days)
    days = rules.simple_close_days if case.complexity == "simple" else rules.complex_close_days
    case.close_due = calendar.add_working_days(today, days)
    deadline = await court_deadline(db, case)
    if deadline is not None and deadline < case.close_due:
        case.close_due = deadline  # a court-referred case ends by the court's date
    await _move(db, case, actor, transition, complexity=case.complexity)
    number = case.number or ""
    await notify(
        db,
        case.filer_id,
        _l("Case {number} accepted", number=number),
        _l(
            "The committee accepted your case {number}. The firm is asked to answer by {due}.",
            number=number,
            due=case.firm_response_due.isoformat(),
        ),
        link=f"/cases/{case.id}",
    )
    await _tell(
        db,
        await _firm_reps(db, case.respondent_firm_id),
        case,
        _l("New complaint {number}", number=number),
        _l(
            "A complaint {number} against your firm was accepted for mediation. Please answer "
            "by {due}.",
            number=number,
            due=case.firm_response_due.isoformat(),
        ),
    )
    await db.commit()
    return case


async def import_batch_of(db: AsyncSession, case: Case) -> ImportBatch | None:
    """The batch a case was imported in (cases.imports): the referring court and its deadline."""
    if case.import_batch_id is None:
        return None
    return await db.get(ImportBatch, case.import_batch_id)


async def court_deadline(db: AsyncSession, case: Case) -> date | None:
    batch = await import_batch_of(db, case)
    return batch.court_deadline if batch is not None and batch.kind == "court" else None


async def reject_case(
    db: AsyncSession, case: Case, actor: User, reason: str, *, ineligible: bool = False
) -> Case:
    name = "mark_ineligible" if ineligible else "reject"
    transition = _check(case, _identity(actor), name, reason)
    case.closed_at = utcnow()
    await _move(db, case, actor, transition, reason)
    number = case.number or ""
    await notify(
        db,
        case.filer_id,
        _l("Case {number} not accepted", number=number),
        _l("Your case {number} was not accepted. Reason: {reason}", number=number, reason=reason),
        link=f"/cases/{case.id}",
    )
    await db.commit()
    return case


async def request_material(
    db: AsyncSession, case: Case, actor: User, items: list[str], note: str
) -> Case:
    """Ask the claimant for named material. Before acceptance this is the needs_info step;
    afterwards the close clock stops until the material arrives."""
    if not items or any(i not in REQUESTABLE_ITEMS for i in items):
        raise DomainError(_l("Choose what the claimant should provide."), field="items")
    if "other" in items and not note.strip():
        raise DomainError(_l("Describe the other material in the note."), field="reason")
    who = _identity(actor)
    if case.status == Status.SUBMITTED:
        transition = _check(case, who, "request_info", note or "-")
        case.requested_items = items
        await _move(db, case, actor, transition, note, items=items)
    else:
        parties = parties_of(case, who)
        if not parties & {Party.STAFF, Party.MEDIATOR} or case.status not in (
            Status.ACCEPTED,
            Status.ASSIGNED,
            Status.IN_MEDIATION,
        ):
            raise DomainError(_l("This action is not possible in the case's current state."))
        case.requested_items = items
        case.paused_at = case.paused_at or utcnow()
        _event(db, case, actor.id, "request", body=note, visibility="claimant", items=items)
        record(db, actor.id, "case.request_material", "case", case.id, items=items)
    number = case.number or ""
    await notify(
        db,
        case.filer_id,
        _l("Material needed for case {number}", number=number),
        _l(
            "The committee asks for more material for case {number}. Open the case to see what "
            "is needed.",
            number=number,
        ),
        link=f"/cases/{case.id}",
    )
    await db.commit()
    return case


async def provide_material(db: AsyncSession, case: Case, actor: User, note: str = "") -> Case:
    """The claimant says the requested material is uploaded; the clock runs again."""
    who = _identity(actor)
    if Party.CLAIMANT not in parties_of(case, who) or not case.requested_items:
        raise DomainError(_l("This action is not possible in the case's current state."))
    if case.status == Status.NEEDS_INFO:
        transition = _check(case, who, "provide_info")
        await _move(db, case, actor, transition, note, items=case.requested_items)
    else:
        _event(db, case, actor.id, "provided", body=note, visibility="claimant")
        record(db, actor.id, "case.provide_material", "case", case.id)
    if case.paused_at is not None:
        calendar = await _calendar(db)
        paused = calendar.working_days_between(today_in_china(case.paused_at), today_in_china())
        case.paused_working_days += paused
        if case.close_due is not None and paused:
            case.close_due = calendar.add_working_days(case.close_due, paused)
        case.paused_at = None
    case.requested_items = []
    await _tell(
        db,
        [*await _committee_staff(db, case.committee_id), case.mediator_id],
        case,
        _l("Material received for {number}", number=case.number or ""),
        _l(
            "The claimant has sent the material requested for case {number}.",
            number=case.number or "",
        ),
    )
    await db.commit()
    return case


# -- assignment -----------------------------------------------------------------------------


@dataclass
class Suggestion:
    mediator: User
    profile: MediatorProfile
    open_cases: int
    score: float
    reasons: list[Msg] = field(default_factory=list)
    excluded: Msg | None = None


GRADE_POINTS = {"senior": 2.0, "intermediate": 1.0, "junior": 0.0}


async def suggest_mediators(db: AsyncSession, case: Case) -> list[Suggestion]:
    """Mediators of the case's committee ranked by specialty, grade and open caseload; a
    declared tie to the respondent firm excludes."""
    rows = await db.execute(
        select(User, MediatorProfile)
        .join(MediatorProfile, MediatorProfile.user_id == User.id)
        .where(
            User.committee_id == case.committee_id,
            User.role == Role.MEDIATOR.value,
            User.is_active.is_(True),
        )
    )
    counted = await db.execute(
        select(Case.mediator_id, func.count(Case.id))
        .where(Case.mediator_id.is_not(None), Case.status.in_([s.value for s in OPEN_STATUSES]))
        .group_by(Case.mediator_id)
    )
    loads: dict[int, int] = {m: n for m, n in counted if m is not None}
    suggestions = []
    for mediator, profile in rows:
        open_cases = int(loads.get(mediator.id, 0))
        score = 0.0
        reasons: list[Msg] = []
        if case.category in profile.specialties:
            score += 3
            reasons.append(_l("Specialises in this category"))
        grade_weight = 1.5 if case.complexity == "complex" else 0.5
        score += GRADE_POINTS.get(profile.grade, 0) * grade_weight
        score -= open_cases * 0.25
        reasons.append(_l("Open cases: {count}", count=open_cases))
        excluded = None
        if case.respondent_firm_id is not None and any(
            t.firm_id == case.respondent_firm_id for t in profile.ties
        ):
            excluded = _l("Declared a tie to the respondent firm")
        suggestions.append(Suggestion(mediator, profile, open_cases, score, reasons, excluded))
    suggestions.sort(key=lambda s: (s.excluded is not None, -s.score, s.open_cases, s.mediator.id))
    return suggestions


async def assign_mediator(
    db: AsyncSession, case: Case, actor: User, mediator_id: int, note: str = ""
) -> Case:
    who = _identity(actor)
    options = {s.mediator.id: s for s in await suggest_mediators(db, case)}
    chosen = options.get(mediator_id)
    if chosen is None:
        raise DomainError(_l("Choose a mediator of this committee."), field="mediator_id")
    if chosen.excluded is not None:
        raise DomainError(
            _l("This mediator has declared a tie to the firm and cannot take the case."),
            field="mediator_id",
        )
    previous = case.mediator_id
    if case.status == Status.ACCEPTED:
        transition = _check(case, who, "assign")
        case.mediator_id = mediator_id
        await _move(db, case, actor, transition, note, mediator_id=mediator_id)
    elif Party.STAFF in parties_of(case, who) and case.status in (
        Status.ASSIGNED,
        Status.IN_MEDIATION,
    ):
        case.mediator_id = mediator_id
        _event(
            db, case, actor.id, "assignment", body=note, mediator_id=mediator_id, previous=previous
        )
        record(db, actor.id, "case.reassign", "case", case.id, mediator=mediator_id)
    else:
        raise DomainError(_l("This action is not possible in the case's current state."))
    overridden = next(iter(options)) != mediator_id
    if overridden:
        record(db, actor.id, "case.assign_override", "case", case.id, mediator=mediator_id)
    number = case.number or ""
    await notify(
        db,
        mediator_id,
        _l("Case {number} assigned to you", number=number),
        _l("You are the mediator of case {number}.", number=number),
        link=f"/cases/{case.id}",
    )
    await _tell(
        db,
        [case.filer_id, *await _firm_reps(db, case.respondent_firm_id)],
        case,
        _l("Mediator for case {number}", number=number),
        _l(
            "{name} is the mediator of case {number}.",
            name=chosen.mediator.display_name,
            number=number,
        ),
    )
    await db.commit()
    return case


async def request_recusal(db: AsyncSession, case: Case, actor: User, reason: str) -> RecusalRequest:
    who = _identity(actor)
    if not parties_of(case, who) & {Party.CLAIMANT, Party.RESPONDENT} or case.mediator_id is None:
        raise DomainError(_l("This action is not possible in the case's current state."))
    if not reason.strip():
        raise DomainError(_l("Give a reason."), field="reason")
    pending = await db.scalar(
        select(RecusalRequest).where(
            RecusalRequest.case_id == case.id, RecusalRequest.status == "pending"
        )
    )
    if pending is not None:
        raise DomainError(_l("A request for another mediator is already waiting for a decision."))
    request = RecusalRequest(
        case_id=case.id,
        requested_by_id=actor.id,
        mediator_id=case.mediator_id,
        reason=reason.strip(),
    )
    db.add(request)
    await db.flush()
    _event(
        db,
        case,
        actor.id,
        "recusal",
        body=reason.strip(),
        visibility="staff",
        request_id=request.id,
    )
    record(db, actor.id, "case.recusal_request", "case", case.id, request=request.id)
    await _tell(
        db,
        await _committee_staff(db, case.committee_id),
        case,
        _l("Recusal requested on {number}", number=case.number or ""),
        _l("A party asks for another mediator on case {number}.", number=case.number or ""),
    )
    await db.commit()
    return request


async def pending_recusal(db: AsyncSession, case: Case) -> RecusalRequest | None:
    return await db.scalar(
        select(RecusalRequest).where(
            RecusalRequest.case_id == case.id, RecusalRequest.status == "pending"
        )
    )


async def decide_recusal(
    db: AsyncSession,
    case: Case,
    actor: User,
    *,
    grant: bool,
    note: str,
    new_mediator_id: int | None,
) -> None:
    if Party.STAFF not in parties_of(case, _identity(actor)):
        raise NotFound
    request = await pending_recusal(db, case)
    if request is None:
        raise DomainError(_l("There is no request waiting for a decision."))
    if grant and (new_mediator_id is None or new_mediator_id == request.mediator_id):
        raise DomainError(_l("Choose another mediator to take over."), field="mediator_id")
    request.status = "granted" if grant else "refused"
    request.decided_by_id, request.decided_at, request.decision_note = actor.id, utcnow(), note
    _event(db, case, actor.id, "recusal_decision", body=note, granted=grant, request_id=request.id)
    record(db, actor.id, "case.recusal_decide", "case", case.id, granted=grant)
    await notify(
        db,
        request.requested_by_id,
        _l("Decision on your request for case {number}", number=case.number or ""),
        _l("Your request for another mediator was granted.")
        if grant
        else _l(
            "Your request for another mediator was refused. Reason: {reason}", reason=note or "-"
        ),
        link=f"/cases/{case.id}",
    )
    if grant:
        assert new_mediator_id is not None
        await assign_mediator(db, case, actor, new_mediator_id, note)
    else:
        await db.commit()


# -- the firm's answer, mediation outcome, messages -------------------------------------------


async def respond_as_firm(
    db: AsyncSession,
    case: Case,
    actor: User,
    *,
    kind: str,
    offer_fen: int | None,
    terms: str,
) -> Case:
    if Party.RESPONDENT not in parties_of(case, _identity(actor)):
        raise NotFound
    if case.status not in (Status.ACCEPTED, Status.ASSIGNED, Status.IN_MEDIATION):
        raise DomainError(_l("This action is not possible in the case's current state."))
    if kind not in RESPONSES:
        raise DomainError(_l("Choose one of the options."), field="kind")
    if kind == "propose" and not offer_fen and not terms.strip():
        raise DomainError(_l("Give the amount or the terms you propose."), field="offer")
    if kind == "decline" and not terms.strip():
        raise DomainError(_l("Give a reason."), field="terms")
    case.firm_response, case.firm_offer_fen, case.firm_terms = kind, offer_fen, terms.strip()
    case.firm_responded_at = utcnow()
    event = _event(
        db, case, actor.id, "response", body=terms.strip(), response=kind, offer_fen=offer_fen
    )
    record(db, actor.id, "case.firm_response", "case", case.id, response=kind)
    await evidence.log_event(db, case, event)
    await _tell(
        db,
        [case.filer_id, case.mediator_id, *await _committee_staff(db, case.committee_id)],
        case,
        _l("The firm answered on case {number}", number=case.number or ""),
        _l(
            "The firm has answered on case {number}. Open the case to read it.",
            number=case.number or "",
        ),
    )
    await db.commit()
    return case


async def apply_transition(
    db: AsyncSession, case: Case, actor: User, name: str, reason: str = ""
) -> Case:
    """Transitions with no extra data: start_mediation, settle, fail, transfer, fulfil, close,
    withdraw."""
    if name not in {"start_mediation", "settle", "fail", "transfer", "fulfil", "close", "withdraw"}:
        raise DomainError(_l("This action is not possible in the case's current state."))
    transition = _check(case, _identity(actor), name, reason)
    if transition.target in (Status.CLOSED, Status.WITHDRAWN):
        case.closed_at = utcnow()
    await _move(db, case, actor, transition, reason)
    number: str | dict[str, str] = case.number or {"msgid": _l("(draft)").msgid}
    status = {"msgid": STATUS_LABELS[transition.target].msgid}
    await _tell(
        db,
        [case.filer_id, case.mediator_id, *await _firm_reps(db, case.respondent_firm_id)],
        case,
        _l("Case {number}: {status}", number=number, status=status),
        _l("Case {number} is now: {status}.", number=number, status=status),
        skip=actor.id,
    )
    await db.commit()
    return case


async def start_mediation_in_session(db: AsyncSession, case: Case, actor: User) -> bool:
    """The mediator opened a live session of an assigned case: mediation has begun (timeline,
    audit, evidence leaf, in the caller's transaction). False if it had begun already."""
    if case.status != Status.ASSIGNED:
        return False
    await _move(db, case, actor, _check(case, _identity(actor), "start_mediation"))
    return True


async def post_message(
    db: AsyncSession, case: Case, actor: User, text: str, audience: str
) -> CaseEvent:
    parties = parties_of(case, _identity(actor))
    text = text.strip()
    if not text:
        raise DomainError(_l("Write a message."), field="message")
    if len(text) > 5000:
        raise DomainError(_l("Use at most {count} characters.", count=5000), field="message")
    if case.status == Status.DRAFT:
        raise DomainError(_l("Submit the case before writing to the committee."))
    if parties & {Party.STAFF, Party.MEDIATOR}:
        if audience not in ("all", "claimant", "firm", "staff"):
            raise DomainError(_l("Choose one of the options."), field="audience")
    elif Party.CLAIMANT in parties:
        audience = "claimant"
    elif Party.RESPONDENT in parties:
        audience = "firm"
    else:
        raise NotFound
    event = _event(db, case, actor.id, "message", body=text, visibility=audience)
    record(db, actor.id, "case.message", "case", case.id, audience=audience)
    recipients: list[int | None] = []
    if audience in ("all", "claimant"):
        recipients.append(case.filer_id)
    if audience in ("all", "firm"):
        recipients.extend(await _firm_reps(db, case.respondent_firm_id))
    recipients.append(case.mediator_id)
    if not parties & {Party.STAFF}:
        recipients.extend(await _committee_staff(db, case.committee_id))
    await _tell(
        db,
        recipients,
        case,
        _l("New message on case {number}", number=case.number or ""),
        _l("{name} wrote on case {number}.", name=actor.display_name, number=case.number or ""),
        skip=actor.id,
    )
    await db.commit()
    return event


def _identity(user: User) -> Identity:
    return Identity(
        user_id=user.id, role=Role(user.role), firm_id=user.firm_id, committee_id=user.committee_id
    )


# -- lists ------------------------------------------------------------------------------------


@dataclass
class CaseFilters:
    status: str = ""
    category: str = ""
    firm_id: int | None = None
    mediator_id: int | None = None
    committee_id: int | None = None
    submitted_from: date | None = None
    submitted_to: date | None = None
    due: str = ""  # "overdue", "soon", "firm_silent"
    complexity: str = ""
    outcome: str = ""  # one of OUTCOME_FILTERS: how the case ended, or "accepted" (ever)
    q: str = ""
    sort: str = "-submitted"
    page: int = 1
    per_page: int = 50


# The list's "outcome" filter: the same sets of cases the oversight figures count.
OUTCOME_FILTERS = ("accepted", *sorted(s.value for s in ENDINGS))

SORTS: dict[str, Any] = {
    "-submitted": Case.submitted_at.desc(),
    "submitted": Case.submitted_at.asc(),
    "close_due": Case.close_due.asc(),
    "-amount": Case.amount_fen.desc(),
    "number": Case.number.asc(),
}


def scope(query: Select[Any], who: Identity) -> Select[Any]:
    """Only the cases this person may see: the list query's own copy of the policy's rules."""
    if who.role == Role.PLATFORM_ADMIN:
        return query.where(Case.status != Status.DRAFT.value)
    if who.role == Role.COMMITTEE_ADMIN:
        return query.where(Case.committee_id == who.committee_id, Case.status != Status.DRAFT.value)
    if who.role == Role.MEDIATOR:
        return query.where(Case.mediator_id == who.user_id)
    if who.role == Role.FIRM_REP:
        return query.where(
            or_(
                Case.filer_id == who.user_id,
                and_(Case.respondent_firm_id == who.firm_id, Case.status != Status.DRAFT.value),
            )
        )
    return query.where(Case.filer_id == who.user_id)


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _fts_table(q: str) -> tuple[str, str] | None:
    """The SQLite FTS5 table and phrase for ``q``, or None when neither index applies."""
    if len(q) >= 3:
        return "cases_fts", fts_phrase(q)
    pairs = bigram_set(q)
    if len(q) == 2 and len(pairs) == 1:
        return "cases_bigrams", fts_phrase(pairs[0])
    return None


def search_clause(db: AsyncSession, vault: DataVault, q: str) -> Any:
    """Case number, firm name, claimant's exact name (blind index) or words in the facts.

    Three or more characters: the trigram index (SQLite FTS5, PostgreSQL pg_trgm). Two: the
    character-pair index (see portal.search). One: number and firm name only, since a single
    Chinese character matches most facts.
    """
    q = q.strip()
    name_match = Case.claimant_name_index == vault.blind_index("person_name", q)
    fts = _fts_table(q)
    if db.get_bind().dialect.name == "sqlite" and fts is not None:
        table, phrase = fts
        text_match: Any = Case.id.in_(
            select(literal_column("rowid"))
            .select_from(text(table))
            .where(text(f"{table} MATCH :phrase"))
            .params(phrase=phrase)
        )
    elif len(q) >= 3:
        like = _like(q)
        # Chinese has no case: plain LIKE tests the same and is about three times cheaper.
        cased = q.lower() != q.upper()
        text_match = or_(
            *(
                column.ilike(like, escape="\\") if cased else column.like(like, escape="\\")
                for column in (Case.number, Case.respondent_name, Case.facts)
            )
        )
    elif fts is not None:
        # PostgreSQL's generated column of character pairs, with its GIN index (migration 0005).
        text_match = text("cases.search_bigrams @> ARRAY[CAST(:pair AS text)]").bindparams(
            pair=bigram_set(q)[0]
        )
    else:
        like = _like(q)
        text_match = or_(
            Case.number.ilike(like, escape="\\"), Case.respondent_name.ilike(like, escape="\\")
        )
    return or_(text_match, name_match)


async def _search_ids(
    db: AsyncSession, vault: DataVault, query: Select[Any], q: str, limit: int
) -> list[int]:
    """Ids of the cases of ``query`` that match ``q``, newest filing first, at most ``limit``.

    On SQLite the full-text table drives: FTS5 reads its index in descending rowid order and
    stops once ``limit`` cases of the scope are found, so a common word costs as little as a
    rare one. Exact-name matches (blind index) are merged in.
    """
    fts = _fts_table(q)
    if db.get_bind().dialect.name == "postgresql":
        return await _search_ids_postgres(db, vault, query, q, limit)
    if fts is None:
        return list(
            await db.scalars(
                query.where(search_clause(db, vault, q)).order_by(Case.id.desc()).limit(limit)
            )
        )
    table, phrase = fts
    hits = sa_table(table, column("rowid"))
    text_ids = await db.scalars(
        query.join(hits, hits.c.rowid == Case.id)
        .where(text(f"{table} MATCH :phrase").bindparams(phrase=phrase))
        .order_by(hits.c.rowid.desc())
        .limit(limit)
    )
    name_ids = await db.scalars(
        query.where(Case.claimant_name_index == vault.blind_index("person_name", q))
        .order_by(Case.id.desc())
        .limit(limit)
    )
    return sorted(set(text_ids) | set(name_ids), reverse=True)[:limit]


# PostgreSQL searches the newest cases first, then the rest (see _search_ids_postgres).
RECENT_SLICE = 5000


async def _search_ids_postgres(
    db: AsyncSession, vault: DataVault, query: Select[Any], q: str, limit: int
) -> list[int]:
    """Newest matches first, from the trigram (or pair) index, in two slices of ids.

    "Newest first, stop at ``limit``" tempts the planner to walk the primary key backwards and
    test every case against the phrase, which for a rare phrase means all of them. Ordering by
    ``id + 0`` makes it use the text index instead; a common phrase would then fetch every
    match, so the newest RECENT_SLICE ids are searched first and usually give enough. Each
    statement is planned with its phrase (not a generic plan), so the estimates are real.
    """
    await db.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    clause = search_clause(db, vault, q)
    newest = await db.scalar(select(func.max(Case.id)))
    if newest is None:
        return []
    ids: list[int] = []
    upper = newest + 1
    for lower in (newest - RECENT_SLICE, 0):
        if lower >= upper:
            continue
        ids += await db.scalars(
            query.where(clause, Case.id >= lower, Case.id < upper)
            .order_by((Case.id + 0).desc())
            .limit(limit - len(ids))
        )
        upper = lower
        if len(ids) >= limit:
            break
    return ids


# Lists count at most this many matches: "more than 1,000" is as useful as an exact figure, and
# an exact count of a common word would visit every matching case.
COUNT_CAP = 1000
LIST_COLUMNS = (
    Case.id,
    Case.number,
    Case.category,
    Case.complexity,
    Case.status,
    Case.respondent_name,
    Case.amount_fen,
    Case.close_due,
    Case.firm_response_due,
    Case.firm_response,
)


async def _matching(db: AsyncSession, who: Identity, filters: CaseFilters) -> Select[Any]:
    """The ids of the cases this person may see that ``filters`` select (not searched yet)."""
    query = scope(select(Case.id), who)
    today = today_in_china()
    if filters.status:
        query = query.where(Case.status == filters.status)
    if filters.category:
        query = query.where(Case.category == filters.category)
    if filters.firm_id:
        query = query.where(Case.respondent_firm_id == filters.firm_id)
    if filters.mediator_id:
        query = query.where(Case.mediator_id == filters.mediator_id)
    if filters.committee_id:
        query = query.where(Case.committee_id == filters.committee_id)
    if filters.complexity:
        query = query.where(Case.complexity == filters.complexity)
    if filters.outcome == "accepted":
        query = query.where(Case.accepted_at.is_not(None))
    elif filters.outcome:
        query = query.where(Case.outcome == filters.outcome)
    if filters.submitted_from:
        query = query.where(
            Case.submitted_at >= datetime.combine(filters.submitted_from, datetime.min.time(), TZ)
        )
    if filters.submitted_to:
        query = query.where(
            Case.submitted_at < datetime.combine(filters.submitted_to, datetime.max.time(), TZ)
        )
    open_values = [s.value for s in OPEN_STATUSES if s not in (Status.SETTLED, Status.FAILED)]
    if filters.due == "overdue":
        query = query.where(Case.status.in_(open_values), Case.close_due < today)
    elif filters.due == "soon":
        calendar = await _calendar(db)
        horizon = calendar.add_working_days(today, 3)
        query = query.where(
            Case.status.in_(open_values), Case.close_due >= today, Case.close_due <= horizon
        )
    elif filters.due == "firm_silent":
        query = query.where(
            Case.status.in_(open_values),
            Case.firm_response.is_(None),
            Case.firm_response_due < today,
        )
    return query


async def _searched(
    db: AsyncSession, vault: DataVault, query: Select[Any], filters: CaseFilters, limit: int
) -> list[int]:
    """The ids of ``query`` matching the search, the newest ``limit`` of them, in the list's
    order (newest filing first unless another order is chosen)."""
    ids = await _search_ids(db, vault, query, filters.q, limit)
    if filters.sort not in ("", "-submitted") and ids:
        order = SORTS.get(filters.sort, SORTS["-submitted"])
        ids = list(
            await db.scalars(
                select(Case.id).where(Case.id.in_(ids)).order_by(order, Case.id.desc())
            )
        )
    return ids


async def list_cases(
    db: AsyncSession, vault: DataVault, who: Identity, filters: CaseFilters
) -> tuple[list[Any], int]:
    """One page of the cases this person may see (rows of LIST_COLUMNS, not whole cases) and
    how many match, counted up to COUNT_CAP + 1.

    First the ids in order, up to COUNT_CAP + 1 of them, read from an index that holds the
    filter's columns; their number is the count. Then the page's rows by id. A search orders
    by filing, newest first, unless another order is chosen, which then sorts the newest
    COUNT_CAP + 1 matches.
    """
    query = await _matching(db, who, filters)
    order = SORTS.get(filters.sort, SORTS["-submitted"])
    page = max(1, filters.page)
    offset = (page - 1) * filters.per_page
    wanted = max(COUNT_CAP + 1, offset + filters.per_page)
    if filters.q:
        ids = await _searched(db, vault, query, filters, wanted)
        total = min(len(ids), COUNT_CAP + 1)
        page_ids = ids[offset : offset + filters.per_page]
    else:
        # The database counts (up to the cap) and pages: no thousand ids through Python.
        # In the list's order, so that both statements read the same index.
        capped = query.order_by(order, Case.id.desc()).limit(COUNT_CAP + 1).subquery()
        total = await db.scalar(select(func.count()).select_from(capped)) or 0
        page_ids = list(
            await db.scalars(
                query.order_by(order, Case.id.desc()).offset(offset).limit(filters.per_page)
            )
        )
    if not page_ids:
        return [], total
    by_id = {
        row.id: row for row in await db.execute(select(*LIST_COLUMNS).where(Case.id.in_(page_ids)))
    }
    return [by_id[i] for i in page_ids if i in by_id], total


# The export's columns: the list's, with the filing time and the outcome.
EXPORT_COLUMNS = (*LIST_COLUMNS, Case.submitted_at, Case.outcome)
# A search exports at most this many matches (the search reads the newest first; and one
# statement binds at most 32,766 values on SQLite, 32,767 on PostgreSQL); without a search,
# every matching case is exported.
EXPORT_SEARCH_MAX = 20_000
EXPORT_BATCH = 500


async def export_rows(
    db: AsyncSession, vault: DataVault, who: Identity, filters: CaseFilters
) -> AsyncIterator[Any]:
    """Every case of the list for ``filters`` (rows of EXPORT_COLUMNS) in the list's order,
    read from the database in batches as they are written out, never all in memory."""
    query = await _matching(db, who, filters)
    order = SORTS.get(filters.sort, SORTS["-submitted"])
    if filters.q:
        ids = await _searched(db, vault, query, filters, EXPORT_SEARCH_MAX)
        for start in range(0, len(ids), EXPORT_BATCH):
            chunk = ids[start : start + EXPORT_BATCH]
            rows = await db.execute(select(*EXPORT_COLUMNS).where(Case.id.in_(chunk)))
            by_id = {row.id: row for row in rows}
            for case_id in chunk:
                if case_id in by_id:
                    yield by_id[case_id]
        return
    statement = query.with_only_columns(*EXPORT_COLUMNS).order_by(order, Case.id.desc())
    result = await db.stream(statement.execution_options(yield_per=EXPORT_BATCH))
    async for row in result:
        yield row


async def matching_ids(
    db: AsyncSession, vault: DataVault, who: Identity, filters: CaseFilters, limit: int
) -> list[int]:
    """The ids of the list's cases for ``filters`` (its scope, search and order), at most
    ``limit``: what "every case this filter matches" means for a batch action."""
    query = await _matching(db, who, filters)
    if filters.q:
        return (await _searched(db, vault, query, filters, limit))[:limit]
    order = SORTS.get(filters.sort, SORTS["-submitted"])
    return list(await db.scalars(query.order_by(order, Case.id.desc()).limit(limit)))


NEXT_STEPS: dict[Status, Msg] = {
    Status.DRAFT: _l("You: finish and submit the application."),
    Status.SUBMITTED: _l("The committee: review the application."),
    Status.NEEDS_INFO: _l("The claimant: send the requested material."),
    Status.ACCEPTED: _l("The committee: assign a mediator. The firm: answer the complaint."),
    Status.ASSIGNED: _l("The mediator: contact the parties and start mediation."),
    Status.IN_MEDIATION: _l("The mediator and both parties: work towards an agreement."),
    Status.SETTLED: _l("The firm: carry out the agreement."),
    Status.FULFILLED: _l("The committee: close the case."),
    Status.FAILED: _l(
        "The mediator: transfer the case to litigation if the claimant wishes, or close it."
    ),
    Status.TRANSFERRED: _l("The committee: close the case."),
    Status.CLOSED: _l("Nothing: the case is closed."),
    Status.REJECTED: _l("Nothing: the case was not accepted."),
    Status.INELIGIBLE: _l("Nothing: the case cannot be mediated here."),
    Status.WITHDRAWN: _l("Nothing: the case was withdrawn."),
}


def next_step(case: Case) -> Msg:
    if case.requested_items and case.status != Status.NEEDS_INFO:
        return _l("The claimant: send the requested material (the deadline is paused).")
    return NEXT_STEPS[Status(case.status)]


async def save_rules(
    db: AsyncSession,
    actor: User,
    committee_id: int,
    *,
    simple_max_amount_fen: int,
    simple_categories: list[str],
    agent_is_complex: bool,
    firm_response_days: int,
    simple_close_days: int,
    complex_close_days: int,
) -> CaseRules:
    """Change a committee's triage rules and deadlines (they apply to cases accepted later)."""
    if any(c not in CATEGORIES for c in simple_categories):
        raise DomainError(_l("Choose one of the options."), field="simple_categories")
    for field_name, days in (
        ("firm_response_days", firm_response_days),
        ("simple_close_days", simple_close_days),
        ("complex_close_days", complex_close_days),
    ):
        if not 1 <= days <= 120:
            raise DomainError(_l("Enter a number of working days from 1 to 120."), field=field_name)
    if simple_close_days > complex_close_days:
        raise DomainError(
            _l("Simple cases cannot have a longer deadline than complex ones."),
            field="simple_close_days",
        )
    rules = await db.get(CaseRules, committee_id)
    if rules is None:
        rules = CaseRules(committee_id=committee_id)
        db.add(rules)
    rules.simple_max_amount_fen = simple_max_amount_fen
    rules.simple_categories = simple_categories
    rules.agent_is_complex = agent_is_complex
    rules.firm_response_days = firm_response_days
    rules.simple_close_days = simple_close_days
    rules.complex_close_days = complex_close_days
    record(
        db,
        actor.id,
        "committee.case_rules",
        "committee",
        committee_id,
        simple_max_amount_fen=simple_max_amount_fen,
        simple_categories=simple_categories,
        days=[firm_response_days, simple_close_days, complex_close_days],
    )
    await db.commit()
    return rules


async def link_cases_to_firm(db: AsyncSession, actor_id: int, firm: Firm) -> int:
    """Filings that named an unregistered firm by its credit code now point at its record."""
    result = await db.execute(
        update(Case)
        .where(Case.respondent_firm_id.is_(None), Case.respondent_credit_code == firm.credit_code)
        .values(respondent_firm_id=firm.id)
    )
    linked = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if linked:
        record(db, actor_id, "firm.link_cases", "firm", firm.id, cases=linked)
        await db.commit()
    return linked


@dataclass
class CasePage:
    """Everything the case page shows, loaded in a fixed number of queries."""

    case: Case
    events: list[CaseEvent]
    materials: list[CaseMaterial]
    committee: Committee
    mediator: User | None
    actors: dict[int, User]
    recusal: RecusalRequest | None
    duplicate: Case | None


async def case_page(db: AsyncSession, case: Case, who: Identity) -> CasePage:
    events = await timeline(db, case, who)
    committee = await db.get(Committee, case.committee_id)
    assert committee is not None
    people = {e.actor_id for e in events if e.actor_id} | {case.mediator_id} - {None}
    users = {u.id: u for u in await db.scalars(select(User).where(User.id.in_(people)))}
    return CasePage(
        case=case,
        events=events,
        materials=await materials(db, case),
        committee=committee,
        mediator=users.get(case.mediator_id) if case.mediator_id else None,
        actors=users,
        recusal=await pending_recusal(db, case),
        duplicate=await db.get(Case, case.duplicate_of_id) if case.duplicate_of_id else None,
    )


async def get_material(db: AsyncSession, case: Case, material_id: int) -> CaseMaterial:
    material = await db.get(CaseMaterial, material_id)
    if material is None or material.case_id != case.id:
        raise NotFound
    return material


async def settle_by_agreement(db: AsyncSession, case: Case, actor: User) -> bool:
    """The case's settlement agreement took effect (its last signature, by ``actor``): the
    case is settled, in the caller's transaction. False if it was not in mediation."""
    if case.status != Status.IN_MEDIATION:
        return False
    await _move(db, case, actor, TRANSITIONS["settle"], agreement=True)
    return True


async def fulfil_by_agreement(db: AsyncSession, case: Case, actor: User) -> bool:
    """Every payment the agreement called for was confirmed (the last by ``actor``): the
    case is fulfilled, then closed, in the caller's transaction."""
    if case.status != Status.SETTLED:
        return False
    await _move(db, case, actor, TRANSITIONS["fulfil"], agreement=True)
    case.closed_at = utcnow()
    await _move(db, case, actor, TRANSITIONS["close"], agreement=True)
    return True


async def transfer_to_litigation(db: AsyncSession, case: Case, actor: User) -> None:
    """Move a failed case to "transferred to litigation" in the caller's transaction (the
    caller has taken the case's row and tells the parties their next steps)."""
    await _move(db, case, actor, _check(case, _identity(actor), "transfer"))
