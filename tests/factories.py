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
