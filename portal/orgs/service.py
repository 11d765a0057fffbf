"""Organisations: committees, firms, mediator profiles and declared ties."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.audit.service import record
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.orgs.categories import CATEGORIES, GRADES, INDUSTRIES, TIE_KINDS
from portal.orgs.models import Committee, Firm, MediatorProfile, MediatorTie
from portal.policy import Role

_PREFIX_RE = re.compile(r"^[A-Z]{2,6}$")


# -- committees -----------------------------------------------------------------------------


def _check_committee_fields(case_prefix: str, categories: list[str]) -> None:
    if not _PREFIX_RE.match(case_prefix):
        raise DomainError(
            _l("The case-number prefix is 2 to 6 capital letters, such as PT."), field="case_prefix"
        )
    if not categories or any(c not in CATEGORIES for c in categories):
        raise DomainError(_l("Choose at least one dispute category."), field="categories")


async def list_committees(db: AsyncSession, only_id: int | None = None) -> list[Committee]:
    query = select(Committee).order_by(Committee.id)
    if only_id is not None:
        query = query.where(Committee.id == only_id)
    return list(await db.scalars(query))


async def get_committee(db: AsyncSession, committee_id: int) -> Committee:
    committee = await db.get(Committee, committee_id)
    if committee is None:
        raise NotFound
    return committee


async def create_committee(
    db: AsyncSession,
    actor_id: int | None,
    *,
    name: str,
    name_en: str | None,
    region: str,
    categories: list[str],
    case_prefix: str,
) -> Committee:
    _check_committee_fields(case_prefix, categories)
    committee = Committee(
        name=name,
        name_en=name_en or None,
        region=region,
        categories=categories,
        case_prefix=case_prefix,
    )
    db.add(committee)
    await _flush_unique(db, _l("A committee with this name or prefix already exists."), "name")
    record(db, actor_id, "committee.create", "committee", committee.id, prefix=case_prefix)
    await db.commit()
    return committee


async def update_committee(
    db: AsyncSession,
    actor_id: int,
    committee: Committee,
    *,
    name: str,
    name_en: str | None,
    region: str,
    categories: list[str],
    case_prefix: str,
) -> Committee:
    _check_committee_fields(case_prefix, categories)
    before = {"name": committee.name, "region": committee.region, "prefix": committee.case_prefix}
    committee.name, committee.name_en, committee.region = name, name_en or None, region
    committee.categories, committee.case_prefix = categories, case_prefix
    await _flush_unique(db, _l("A committee with this name or prefix already exists."), "name")
    record(db, actor_id, "committee.update", "committee", committee.id, before=before)
    await db.commit()
    return committee


# -- firms ----------------------------------------------------------------------------------


async def list_firms(db: AsyncSession, search: str = "") -> list[Firm]:
    query = select(Firm).order_by(Firm.name).limit(500)
    if search:
        like = f"%{search}%"
        query = query.where(Firm.name.ilike(like) | Firm.credit_code.ilike(like))
    return list(await db.scalars(query))


async def get_firm(db: AsyncSession, firm_id: int) -> Firm:
    firm = await db.get(Firm, firm_id)
    if firm is None:
        raise NotFound
    return firm


async def create_firm(
    db: AsyncSession,
    actor_id: int | None,
    *,
    name: str,
    name_en: str | None,
    credit_code: str,
    industry: str,
) -> Firm:
    if industry not in INDUSTRIES:
        raise DomainError(_l("Choose one of the options."), field="industry")
    firm = Firm(name=name, name_en=name_en or None, credit_code=credit_code, industry=industry)
    db.add(firm)
    await _flush_unique(
        db, _l("A firm with this unified social credit code is already registered."), "credit_code"
    )
    record(db, actor_id, "firm.create", "firm", firm.id, credit_code=credit_code)
    await db.commit()
    return firm


async def update_firm(
    db: AsyncSession,
    actor_id: int,
    firm: Firm,
    *,
    name: str,
    name_en: str | None,
    credit_code: str,
    industry: str,
) -> Firm:
    if industry not in INDUSTRIES:
        raise DomainError(_l("Choose one of the options."), field="industry")
    before = {"name": firm.name, "credit_code": firm.credit_code, "industry": firm.industry}
    firm.name, firm.name_en, firm.credit_code, firm.industry = (
        name,
        name_en or None,
        credit_code,
        industry,
    )
    await _flush_unique(
        db, _l("A firm with this unified social credit code is already registered."), "credit_code"
    )
    record(db, actor_id, "firm.update", "firm", firm.id, before=before)
    await db.commit()
    return firm


# -- mediators ------------------------------------------------------------------------------


async def list_mediators(
    db: AsyncSession, committee_id: int | None
) -> list[tuple[User, MediatorProfile]]:
    query = (
        select(User, MediatorProfile)
        .join(MediatorProfile, MediatorProfile.user_id == User.id)
        .where(User.role == Role.MEDIATOR.value)
        .order_by(User.id)
    )
    if committee_id is not None:
        query = query.where(User.committee_id == committee_id)
    return [(row[0], row[1]) for row in await db.execute(query)]


async def get_mediator(db: AsyncSession, user_id: int) -> tuple[User, MediatorProfile]:
    row = (
        await db.execute(
            select(User, MediatorProfile)
            .join(MediatorProfile, MediatorProfile.user_id == User.id)
            .where(User.id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound
    return row[0], row[1]


async def update_mediator_profile(
    db: AsyncSession, actor_id: int, profile: MediatorProfile, *, specialties: list[str], grade: str
) -> None:
    if any(s not in CATEGORIES for s in specialties):
        raise DomainError(_l("Choose one of the options."), field="specialties")
    if grade not in GRADES:
        raise DomainError(_l("Choose one of the options."), field="grade")
    profile.specialties, profile.grade = specialties, grade
    record(
        db,
        actor_id,
        "mediator.update",
        "user",
        profile.user_id,
        specialties=specialties,
        grade=grade,
    )
    await db.commit()


async def declare_tie(
    db: AsyncSession, actor_id: int, profile: MediatorProfile, *, firm_id: int, kind: str, note: str
) -> MediatorTie:
    if kind not in TIE_KINDS:
        raise DomainError(_l("Choose one of the options."), field="kind")
    await get_firm(db, firm_id)
    if any(t.firm_id == firm_id for t in profile.ties):
        raise DomainError(_l("A tie to this firm is already declared."), field="firm_id")
    tie = MediatorTie(mediator_id=profile.user_id, firm_id=firm_id, kind=kind, note=note)
    profile.ties.append(tie)
    await db.flush()
    record(db, actor_id, "mediator.tie_declare", "user", profile.user_id, firm_id=firm_id)
    await db.commit()
    return tie


async def withdraw_tie(
    db: AsyncSession, actor_id: int, profile: MediatorProfile, tie_id: int
) -> None:
    tie = next((t for t in profile.ties if t.id == tie_id), None)
    if tie is None:
        raise NotFound
    profile.ties.remove(tie)
    record(db, actor_id, "mediator.tie_withdraw", "user", profile.user_id, firm_id=tie.firm_id)
    await db.commit()


async def _flush_unique(db: AsyncSession, message: Msg, field: str) -> None:
    """Flush; a unique-constraint violation becomes a form error on ``field``."""
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        raise DomainError(message, field=field) from None
