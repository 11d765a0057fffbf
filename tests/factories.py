"""Factories: build committees, firms and users through the real services."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from portal.accounts import service as accounts
from portal.accounts.models import User
from portal.orgs import service as orgs
from portal.orgs.models import Committee, Firm
from portal.policy import Role
from portal.validators import USCC_ALPHABET, uscc_check_character

PASSWORD = "Correct-Horse-42"
_counter = itertools.count(1)


def credit_code(n: int | None = None) -> str:
    """A valid unified social credit code, different for each call."""
    n = next(_counter) if n is None else n
    body = "91310000MA1" + "".join(USCC_ALPHABET[(n // 31**i) % 31] for i in range(6))
    return body + uscc_check_character(body)


@dataclass
class Person:
    user: User
    login: str
    password: str = PASSWORD

    @property
    def id(self) -> int:
        return self.user.id


def _state(app: Any) -> Any:
    return app.starlette.state


async def make_committee(app: Any, prefix: str | None = None, **fields: Any) -> Committee:
    n = next(_counter)
    prefix = prefix or "C" + "".join(chr(65 + (n // 26**i) % 26) for i in range(3))
    async with _state(app).db() as db:
        return await orgs.create_committee(
            db,
            None,
            name=fields.get("name", f"调解委员会{n}"),
            name_en=fields.get("name_en"),
            region=fields.get("region", "上海市"),
            categories=fields.get("categories", ["credit_card", "small_loan"]),
            case_prefix=prefix,
        )


async def make_firm(app: Any, **fields: Any) -> Firm:
    n = next(_counter)
    async with _state(app).db() as db:
        return await orgs.create_firm(
            db,
            None,
            name=fields.get("name", f"测试金融公司{n}"),
            name_en=fields.get("name_en"),
            credit_code=fields.get("credit_code", credit_code(n)),
            industry=fields.get("industry", "lending"),
        )


async def make_user(
    app: Any,
    role: Role,
    *,
    committee: Committee | None = None,
    firm: Firm | None = None,
    email: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    locale: str = "zh_CN",
) -> Person:
    n = next(_counter)
    if phone is None and email is None:
        email = f"user{n}@example.com"
    if role in (Role.MEDIATOR, Role.COMMITTEE_ADMIN) and committee is None:
        committee = await make_committee(app)
    if role == Role.FIRM_REP and firm is None:
        firm = await make_firm(app)
    async with _state(app).db() as db:
        user = await accounts.create_user(
            db,
            _state(app).vault,
            role=role,
            display_name=name or f"用户{n}",
            password=PASSWORD,
            phone=phone,
            email=email,
            locale=locale,
            committee_id=committee.id if committee else None,
            firm_id=firm.id if firm else None,
        )
    return Person(user=user, login=email or phone or "")


# -- cases ----------------------------------------------------------------------------------

VALID_ID = "11010519491231002X"
PDF = b"%PDF-1.4\n% jiefen test\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def verify_phone(app: Any, person: Person) -> None:
    from portal.db import utcnow

    async with _state(app).db() as db:
        user = await db.get(User, person.id)
        assert user is not None and user.phone_index is not None
        user.phone_verified_at = utcnow()
        await db.commit()
        person.user = user


async def make_draft(
    app: Any,
    filer: Person,
    firm: Firm | None,
    *,
    category: str = "credit_card",
    amount_fen: int = 1_280_000,
    facts: str = "信用卡分期手续费未告知，要求退还。",
    id_number: str = VALID_ID,
    name: str = "张三",
) -> Any:
    """A complete draft with both required materials (stored in the blob store)."""
    import secrets as _secrets

    from portal.cases import service as cases

    state = _state(app)
    async with state.db() as db:
        user = await db.get(User, filer.id)
        assert user is not None
        case = await cases.start_draft(
            db,
            user,
            category=category,
            region="",
            firm_id=firm.id if firm else None,
            respondent_name="" if firm else "未登记公司",
            respondent_credit_code=None,
            form_key=_secrets.token_urlsafe(16),
            ip="127.0.0.1",
        )
        await cases.save_claimant(
            db, state.vault, case, user, filed_as="self", name=name, id_number=id_number
        )
        await cases.save_claims(
            db,
            case,
            user,
            amount_fen=amount_fen,
            outcomes=["refund"],
            facts=facts,
            incident_date=None,
        )
        await cases.save_eligibility(
            db, case, user, dict.fromkeys(cases.ELIGIBILITY_QUESTIONS, False)
        )
        for kind in ("identity", "contract"):
            blob = state.blobs.put_bytes(PDF + kind.encode() + _secrets.token_bytes(8))
            await cases.add_material(
                db,
                case,
                user,
                kind=kind,
                filename=f"{kind}.pdf",
                content_type="application/pdf",
                size=blob.size,
                sha256=blob.sha256,
            )
        return case


async def make_case(
    app: Any, filer: Person, firm: Firm | None, *, status: str = "submitted", **kw: Any
) -> Any:
    """A case moved through the real services up to ``status`` (submitted, accepted, assigned)."""
    from portal.cases import service as cases

    mediator_id = kw.pop("mediator_id", None)
    case = await make_draft(app, filer, firm, **kw)
    state = _state(app)
    async with state.db() as db:
        user = await db.get(User, filer.id)
        case = await db.get(type(case), case.id)
        assert user is not None and case is not None
        case = await cases.submit_case(db, state.vault, case, user)
        if status == "submitted":
            return case
        staff = await db.scalar(
            __import__("sqlalchemy")
            .select(User)
            .where(User.committee_id == case.committee_id, User.role == "committee_admin")
        )
        assert staff is not None, "make_case needs a committee administrator for this committee"
        case = await cases.accept_case(db, case, staff)
        if status == "accepted":
            return case
        mediator_id = mediator_id or (await cases.suggest_mediators(db, case))[0].mediator.id
        return await cases.assign_mediator(db, case, staff, mediator_id)


# -- live sessions ----------------------------------------------------------------------------


async def make_meeting(
    app: Any,
    case: Any,
    mediator: Person,
    *,
    mode: str = "video",
    minutes_from_now: int = 60,
    observers: tuple[Person, ...] = (),
) -> Any:
    """A session of ``case`` scheduled by its mediator through the real service."""
    from datetime import timedelta

    from portal.cases.models import Case
    from portal.db import utcnow
    from portal.meetings import service as meetings

    async with _state(app).db() as db:
        user = await db.get(User, mediator.id)
        loaded = await db.get(Case, case.id)
        assert user is not None and loaded is not None
        return await meetings.schedule_meeting(
            db,
            loaded,
            user,
            starts_at=utcnow() + timedelta(minutes=minutes_from_now),
            duration_minutes=60,
            mode=mode,
            observer_ids=[o.id for o in observers],
        )


async def make_minutes(app: Any, meeting_id: int, mediator: Person, text: str) -> Any:
    """A draft of a session's minutes, saved by its mediator through the real service."""
    from portal.meetings import minutes
    from portal.meetings import service as meetings

    async with _state(app).db() as db:
        user = await db.get(User, mediator.id)
        assert user is not None
        resource = await meetings.access(db, meeting_id)
        latest = await minutes._latest(db, meeting_id)
        base = latest.revision if latest is not None else 0
        return (await minutes.save_minutes(db, resource, user, text, base)).version
