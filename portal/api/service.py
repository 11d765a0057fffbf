"""The firm API's tokens: issue (shown once), list, revoke, and resolve a bearer token.

A token belongs to one firm and carries chosen permissions ("scopes"). The API acts in the
name of the representative who made it, so it stops working when that person is deactivated
or leaves the firm, as well as when it expires or is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.api.models import ApiToken
from portal.audit.service import record
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.policy import Identity, Role

SCOPES: dict[str, Msg] = {
    "cases:read": _l("Read the firm's cases and their files"),
    "cases:respond": _l("Answer cases and propose settlements"),
    "evidence:write": _l("Upload evidence to cases"),
    "agreements:read": _l("Read settlement agreements and their payments"),
    "payments:write": _l("Record payments under agreements"),
}
# Choices of lifetime offered when a token is made (days; 0: until revoked).
LIFETIMES = (30, 90, 365, 0)
TOKEN_PREFIX = "jfk_"  # noqa: S105 (a prefix that names our tokens, not a secret)
MAX_TOKENS = 20  # live tokens per firm
# Writing "last used" on every request would make every read a write: once a minute is enough.
USE_RESOLUTION = timedelta(minutes=1)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: the token and the representative it acts for."""

    token: ApiToken
    user: User

    @property
    def identity(self) -> Identity:
        return Identity(user_id=self.user.id, role=Role.FIRM_REP, firm_id=self.token.firm_id)

    def allows(self, scope: str) -> bool:
        return scope in self.token.scopes


def is_live(token: ApiToken, now: datetime) -> bool:
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


async def create_token(
    db: AsyncSession, actor: User, *, name: str, scopes: list[str], days: int
) -> IssuedToken:
    if actor.firm_id is None or actor.role != Role.FIRM_REP:
        raise NotFound
    name = name.strip()
    if not name:
        raise DomainError(_l("Give the token a name."), field="name")
    if len(name) > 80:
        raise DomainError(_l("Use at most {count} characters.", count=80), field="name")
    chosen = sorted(set(scopes))
    if not chosen:
        raise DomainError(_l("Choose at least one permission."), field="scopes")
    if any(s not in SCOPES for s in chosen):
        raise DomainError(_l("Choose one of the options."), field="scopes")
    if days not in LIFETIMES:
        raise DomainError(_l("Choose one of the options."), field="days")
    now = utcnow()
    live = [t for t in await list_tokens(db, actor.firm_id) if is_live(t, now)]
    if len(live) >= MAX_TOKENS:
        raise DomainError(
            _l("A firm may have at most {count} tokens; revoke one first.", count=MAX_TOKENS)
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        firm_id=actor.firm_id,
        created_by_id=actor.id,
        name=name,
        prefix=secret[:12],
        digest=digest(secret),
        scopes=chosen,
        created_at=now,
        expires_at=now + timedelta(days=days) if days else None,
        last_used_ip="",
    )
    db.add(token)
    await db.flush()
    record(db, actor.id, "api.token_create", "api_token", token.id, scopes=chosen, days=days)
    await db.commit()
    return IssuedToken(token=token, secret=secret)


async def list_tokens(db: AsyncSession, firm_id: int) -> list[ApiToken]:
    return list(
        await db.scalars(
            select(ApiToken).where(ApiToken.firm_id == firm_id).order_by(ApiToken.id.desc())
        )
    )


async def get_token(db: AsyncSession, token_id: int) -> ApiToken:
    token = await db.get(ApiToken, token_id)
    if token is None:
        raise NotFound
    return token


async def revoke_token(db: AsyncSession, token: ApiToken, actor: User) -> None:
    if token.revoked_at is not None:
        raise DomainError(_l("This token is already revoked."))
    token.revoked_at, token.revoked_by_id = utcnow(), actor.id
    record(db, actor.id, "api.token_revoke", "api_token", token.id)
    await db.commit()


async def authenticate(db: AsyncSession, secret: str, ip: str) -> Caller | None:
    """The caller a bearer token stands for, or None when it is unknown, revoked, expired, or
    its representative may no longer act for the firm."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
        return None
    token = await db.scalar(select(ApiToken).where(ApiToken.digest == digest(secret)))
    now = utcnow()
    if token is None or not is_live(token, now):
        return None
    person = await db.get(User, token.created_by_id)
    if (
        person is None
        or not person.is_active
        or person.role != Role.FIRM_REP
        or person.firm_id != token.firm_id
    ):
        return None
    if token.last_used_at is None or now - token.last_used_at > USE_RESOLUTION:
        await db.execute(
            update(ApiToken)
            .where(ApiToken.id == token.id)
            .values(last_used_at=now, last_used_ip=ip[:45])
            .execution_options(synchronize_session=False)
        )
        await db.commit()
        token.last_used_at, token.last_used_ip = now, ip[:45]
    return Caller(token=token, user=person)
