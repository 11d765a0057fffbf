"""Accounts: registration, login with throttling, sessions, passwords, preferences, invitations.

Plain async functions over an AsyncSession. Each user-visible change commits its own transaction
and writes an audit event in it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, Signer
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import Invitation, LoginThrottle, PhoneCode, User, UserSession
from portal.audit.service import record
from portal.crypto import DataVault, derive_key, random_token, token_digest
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.i18n import _l
from portal.orgs.models import MediatorProfile
from portal.policy import Identity, Role
from portal.settings import SUPPORTED_LOCALES, Settings

PASSWORDS = PasswordHasher()
_DUMMY_HASH = PASSWORDS.hash("jiefen: equalise the time of unknown-account logins")

THROTTLE_THRESHOLD = 5
THROTTLE_BASE_SECONDS = 15
THROTTLE_MAX_SECONDS = 3600
THROTTLE_MEMORY = timedelta(hours=24)
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)


# -- identities and contact details ---------------------------------------------------------


def identity_of(user: User | None) -> Identity:
    if user is None:
        return Identity()
    return Identity(
        user_id=user.id,
        role=Role(user.role),
        firm_id=user.firm_id,
        committee_id=user.committee_id,
    )


def login_kind(identifier: str) -> str:
    return "email" if "@" in identifier else "phone"


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else "***"


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


@dataclass(frozen=True)
class Contact:
    phone: str | None
    email: str | None

    @property
    def masked(self) -> str:
        parts = []
        if self.phone:
            parts.append(mask_phone(self.phone))
        if self.email:
            parts.append(mask_email(self.email))
        return " · ".join(parts)


def contact_of(vault: DataVault, user: User) -> Contact:
    phone = vault.decrypt(user.phone_enc, "users.phone") if user.phone_enc else None
    email = vault.decrypt(user.email_enc, "users.email") if user.email_enc else None
    return Contact(phone=phone, email=email)


def _set_contact(vault: DataVault, user: User, phone: str | None, email: str | None) -> None:
    if phone:
        user.phone_index = vault.blind_index("phone", phone)
        user.phone_enc = vault.encrypt(phone, "users.phone")
    if email:
        user.email_index = vault.blind_index("email", email)
        user.email_enc = vault.encrypt(email, "users.email")


async def _check_contact_free(
    db: AsyncSession, vault: DataVault, phone: str | None, email: str | None
) -> None:
    if phone and await db.scalar(
        select(User.id).where(User.phone_index == vault.blind_index("phone", phone))
    ):
        raise DomainError(
            _l("This phone number is already registered. Log in instead."), field="phone"
        )
    if email and await db.scalar(
        select(User.id).where(User.email_index == vault.blind_index("email", email))
    ):
        raise DomainError(
            _l("This email address is already registered. Log in instead."), field="email"
        )


async def find_user_by_login(db: AsyncSession, vault: DataVault, identifier: str) -> User | None:
    kind = login_kind(identifier)
    column = User.email_index if kind == "email" else User.phone_index
    return await db.scalar(select(User).where(column == vault.blind_index(kind, identifier)))


# -- creating accounts ----------------------------------------------------------------------


async def create_user(db: AsyncSession, vault: DataVault, **fields: Any) -> User:
    """Create any kind of user (CLI, demo, registration) and commit."""
    user = await _add_user(db, vault, **fields)
    await db.commit()
    return user


async def _add_user(
    db: AsyncSession,
    vault: DataVault,
    *,
    role: Role,
    display_name: str,
    password: str,
    phone: str | None = None,
    email: str | None = None,
    locale: str = "zh_CN",
    firm_id: int | None = None,
    committee_id: int | None = None,
    actor_id: int | None = None,
) -> User:
    if not phone and not email:
        raise DomainError(_l("Give a mobile number, an email address, or both."), field="phone")
    if role == Role.FIRM_REP and firm_id is None:
        raise DomainError(_l("A firm representative must belong to a firm."), field="firm")
    if role in (Role.MEDIATOR, Role.COMMITTEE_ADMIN) and committee_id is None:
        raise DomainError(_l("Committee staff must belong to a committee."), field="committee")
    await _check_contact_free(db, vault, phone, email)
    user = User(
        role=role.value,
        display_name=display_name,
        password_hash=PASSWORDS.hash(password),
        locale=locale if locale in SUPPORTED_LOCALES else "zh_CN",
        firm_id=firm_id if role == Role.FIRM_REP else None,
        committee_id=committee_id if role in (Role.MEDIATOR, Role.COMMITTEE_ADMIN) else None,
    )
    _set_contact(vault, user, phone, email)
    db.add(user)
    try:
        await db.flush()
    except IntegrityError:
        # A concurrent registration took the phone or email between the check and the insert.
        await db.rollback()
        raise DomainError(
            _l("This phone number or email address is already registered."), field="phone"
        ) from None
    if role == Role.MEDIATOR:
        db.add(MediatorProfile(user_id=user.id, specialties=[], grade="junior"))
    record(db, actor_id or user.id, "user.create", "user", user.id, role=role.value)
    return user


async def register_consumer(
    db: AsyncSession,
    vault: DataVault,
    *,
    display_name: str,
    password: str,
    phone: str | None,
    email: str | None,
    locale: str,
) -> User:
    return await create_user(
        db,
        vault,
        role=Role.CONSUMER,
        display_name=display_name,
        password=password,
        phone=phone,
        email=email,
        locale=locale,
    )


# -- logging in -----------------------------------------------------------------------------


def throttle_delay(failures: int) -> int:
    """Seconds to wait after ``failures`` consecutive failures: 15, 30, 60… up to an hour."""
    if failures < THROTTLE_THRESHOLD:
        return 0
    return int(
        min(THROTTLE_BASE_SECONDS * 2 ** (failures - THROTTLE_THRESHOLD), THROTTLE_MAX_SECONDS)
    )


def _throttle_keys(vault: DataVault, identifier: str, ip: str) -> list[str]:
    kind = login_kind(identifier)
    return [f"acct:{vault.blind_index(kind, identifier.lower())}", f"ip:{ip}"]


async def _seconds_blocked(db: AsyncSession, keys: list[str], now: datetime) -> int:
    rows = await db.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys)))
    waits = [
        (row.blocked_until - now).total_seconds()
        for row in rows
        if row.blocked_until is not None and row.blocked_until > now
    ]
    return int(max(waits)) + 1 if waits else 0


async def _record_failure(db: AsyncSession, keys: list[str], now: datetime) -> None:
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    for key in keys:
        await db.execute(
            insert(LoginThrottle)
            .values(key=key, failures=0, last_failure_at=now)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = await db.scalar(
            select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
        )
        assert row is not None
        if now - row.last_failure_at > THROTTLE_MEMORY:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        delay = throttle_delay(row.failures)
        row.blocked_until = now + timedelta(seconds=delay) if delay else None
    await db.commit()


async def authenticate(
    db: AsyncSession, vault: DataVault, identifier: str, password: str, ip: str
) -> User:
    """Check a login; raise DomainError (throttled or wrong) without saying which part was wrong."""
    identifier = identifier.strip()
    if login_kind(identifier) == "email":
        identifier = identifier.lower()
    now = utcnow()
    keys = _throttle_keys(vault, identifier, ip)
    wait = await _seconds_blocked(db, keys, now)
    if wait:
        raise DomainError(
            _l(
                "Too many failed attempts. Wait {seconds} seconds, then try again.",
                seconds=wait,
            )
        )
    user = await find_user_by_login(db, vault, identifier) if identifier else None
    try:
        PASSWORDS.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None and user.is_active
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        await _record_failure(db, keys, now)
        raise DomainError(_l("The mobile number, email address or password is wrong."))
    await db.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))
    if PASSWORDS.check_needs_rehash(user.password_hash):
        user.password_hash = PASSWORDS.hash(password)
    await db.commit()
    return user


# -- sessions -------------------------------------------------------------------------------


def session_signer(settings: Settings) -> Signer:
    return Signer(derive_key(settings.secret_key, "jiefen/session-cookie"), salt="session")


def sign_token(settings: Settings, token: str) -> str:
    return session_signer(settings).sign(token).decode()


def unsign_token(settings: Settings, cookie: str | None) -> str | None:
    if not cookie:
        return None
    try:
        return session_signer(settings).unsign(cookie).decode()
    except BadSignature:
        return None


async def start_session(db: AsyncSession, user: User, user_agent: str) -> str:
    """Open a new session (a fresh token, so a planted one is never promoted) and commit."""
    token = random_token()
    db.add(UserSession(id=token_digest(token), user_id=user.id, user_agent=user_agent[:200]))
    await db.execute(update(User).where(User.id == user.id).values(last_login_at=utcnow()))
    record(db, user.id, "session.start", "user", user.id)
    await db.commit()
    return token


async def resolve_session(
    db: AsyncSession, settings: Settings, token: str | None
) -> tuple[User, UserSession] | None:
    """The user behind a session token, or None when unknown, idle too long or too old."""
    if not token:
        return None
    row = (
        await db.execute(
            select(UserSession, User)
            .join(User, User.id == UserSession.user_id)
            .where(UserSession.id == token_digest(token))
        )
    ).first()
    if row is None:
        return None
    session, user = row[0], row[1]
    now = utcnow()
    idle = timedelta(minutes=settings.session_idle_minutes)
    absolute = timedelta(hours=settings.session_absolute_hours)
    if (
        not user.is_active
        or now - session.last_seen_at > idle
        or now - session.created_at > absolute
    ):
        await db.execute(delete(UserSession).where(UserSession.id == session.id))
        await db.commit()
        return None
    if now - session.last_seen_at > SESSION_TOUCH_INTERVAL:
        await db.execute(
            update(UserSession).where(UserSession.id == session.id).values(last_seen_at=now)
        )
        await db.commit()
    return user, session


async def end_session(db: AsyncSession, token: str, user_id: int) -> None:
    await db.execute(delete(UserSession).where(UserSession.id == token_digest(token)))
    record(db, user_id, "session.end", "user", user_id)
    await db.commit()


def check_password(user: User, current: str) -> None:
    """Refuse (DomainError on the "current" field) unless ``current`` is the user's password."""
    try:
        PASSWORDS.verify(user.password_hash, current)
    except (VerificationError, InvalidHashError):
        raise DomainError(_l("Your current password is wrong."), field="current") from None


async def confirm_password(db: AsyncSession, user: User, current: str) -> None:
    """Ask a logged-in user for their password again (before something sensitive), with the
    login's throttle on this account: a session someone else holds cannot guess at it."""
    now = utcnow()
    keys = [f"reauth:{user.id}"]
    wait = await _seconds_blocked(db, keys, now)
    if wait:
        raise DomainError(
            _l("Too many failed attempts. Wait {seconds} seconds, then try again.", seconds=wait),
            field="current",
        )
    try:
        check_password(user, current)
    except DomainError:
        await _record_failure(db, keys, now)
        raise
    await db.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))


async def change_password(
    db: AsyncSession, user: User, current: str, new: str, user_agent: str
) -> str:
    """Change the password, end every session of the user, and return a fresh session token."""
    check_password(user, current)
    if current == new:
        raise DomainError(_l("Choose a password different from the current one."), field="new")
    user.password_hash = PASSWORDS.hash(new)
    user.password_changed_at = utcnow()
    await db.execute(delete(UserSession).where(UserSession.user_id == user.id))
    record(db, user.id, "user.password_change", "user", user.id)
    await db.flush()
    return await start_session(db, user, user_agent)


async def set_preferences(
    db: AsyncSession, user: User, *, locale: str | None = None, large_text: bool | None = None
) -> None:
    changed: dict[str, object] = {}
    if locale is not None and locale in SUPPORTED_LOCALES and locale != user.locale:
        user.locale = locale
        changed["locale"] = locale
    if large_text is not None and large_text != user.large_text:
        user.large_text = large_text
        changed["large_text"] = large_text
    if changed:
        db.add(user)
        record(db, user.id, "user.preferences", "user", user.id, **changed)
        await db.commit()


async def set_user_active(db: AsyncSession, actor: User, user: User, active: bool) -> None:
    if user.id == actor.id:
        raise DomainError(_l("You cannot deactivate your own account."))
    user.is_active = active
    if not active:
        await db.execute(delete(UserSession).where(UserSession.user_id == user.id))
    record(db, actor.id, "user.activate" if active else "user.deactivate", "user", user.id)
    await db.commit()


async def get_user(db: AsyncSession, user_id: int) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound
    return user


async def list_users(db: AsyncSession, *, limit: int = 500) -> list[User]:
    return list(await db.scalars(select(User).order_by(User.id).limit(limit)))


# -- invitations ----------------------------------------------------------------------------


async def create_invitation(
    db: AsyncSession,
    settings: Settings,
    actor: User,
    *,
    role: Role,
    invitee_name: str,
    firm_id: int | None,
    committee_id: int | None,
) -> tuple[Invitation, str]:
    """Create an invitation and return it with its token (shown once, stored hashed)."""
    if role == Role.FIRM_REP and firm_id is None:
        raise DomainError(_l("Choose the firm this person represents."), field="firm_id")
    if role in (Role.MEDIATOR, Role.COMMITTEE_ADMIN) and committee_id is None:
        raise DomainError(_l("Choose the committee this person works for."), field="committee_id")
    token = random_token()
    invitation = Invitation(
        token_digest=token_digest(token),
        role=role.value,
        invitee_name=invitee_name,
        firm_id=firm_id if role == Role.FIRM_REP else None,
        committee_id=committee_id if role in (Role.MEDIATOR, Role.COMMITTEE_ADMIN) else None,
        created_by_id=actor.id,
        expires_at=utcnow() + timedelta(days=settings.invitation_days),
    )
    db.add(invitation)
    await db.flush()
    record(db, actor.id, "invitation.create", "invitation", invitation.id, role=role.value)
    await db.commit()
    return invitation, token


async def list_invitations(db: AsyncSession, committee_id: int | None) -> list[Invitation]:
    query = select(Invitation).order_by(Invitation.created_at.desc()).limit(200)
    if committee_id is not None:
        query = query.join(User, User.id == Invitation.created_by_id).where(
            User.committee_id == committee_id
        )
    return list(await db.scalars(query))


async def get_invitation(db: AsyncSession, invitation_id: int) -> Invitation:
    invitation = await db.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound
    return invitation


def invitation_state(invitation: Invitation, now: datetime | None = None) -> str:
    now = now or utcnow()
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= now:
        return "expired"
    return "open"


async def open_invitation(db: AsyncSession, token: str) -> Invitation:
    """The invitation behind a link, if it can still be accepted."""
    invitation = await db.scalar(
        select(Invitation).where(Invitation.token_digest == token_digest(token))
    )
    if invitation is None:
        raise NotFound
    state = invitation_state(invitation)
    if state == "expired":
        raise DomainError(_l("This invitation has expired. Ask for a new one."))
    if state != "open":
        raise DomainError(_l("This invitation has already been used or withdrawn."))
    return invitation


async def accept_invitation(
    db: AsyncSession,
    vault: DataVault,
    token: str,
    *,
    display_name: str,
    password: str,
    phone: str | None,
    email: str | None,
    locale: str,
) -> User:
    invitation = await open_invitation(db, token)
    # Claim the invitation first, so two people racing on one link cannot both use it.
    claimed = await db.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise DomainError(_l("This invitation has already been used or withdrawn."))
    user = await _add_user(
        db,
        vault,
        role=Role(invitation.role),
        display_name=display_name,
        password=password,
        phone=phone,
        email=email,
        locale=locale,
        firm_id=invitation.firm_id,
        committee_id=invitation.committee_id,
        actor_id=invitation.created_by_id,
    )
    await db.execute(
        update(Invitation).where(Invitation.id == invitation.id).values(accepted_user_id=user.id)
    )
    record(db, user.id, "invitation.accept", "invitation", invitation.id)
    await db.commit()
    return user


async def revoke_invitation(db: AsyncSession, actor: User, invitation: Invitation) -> None:
    if invitation_state(invitation) != "open":
        raise DomainError(_l("Only an open invitation can be withdrawn."))
    invitation.revoked_at = utcnow()
    record(db, actor.id, "invitation.revoke", "invitation", invitation.id)
    await db.commit()


# -- phone verification ---------------------------------------------------------------------

PHONE_CODE_TTL = timedelta(minutes=10)
PHONE_CODE_INTERVAL = timedelta(seconds=60)
PHONE_CODE_MAX_ATTEMPTS = 5


def _code_digest(settings: Settings, user_id: int, code: str) -> str:
    key = derive_key(settings.secret_key, "jiefen/phone-code")
    return hmac.new(key, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


async def set_phone(db: AsyncSession, vault: DataVault, user: User, phone: str) -> None:
    """Give or change the account's mobile number; it must be verified again."""
    if user.phone_index == vault.blind_index("phone", phone):
        return
    await _check_contact_free(db, vault, phone, None)
    _set_contact(vault, user, phone, None)
    user.phone_verified_at = None
    record(db, user.id, "user.phone_change", "user", user.id)
    await db.commit()


async def send_phone_code(db: AsyncSession, settings: Settings, user: User) -> None:
    """Send a six-digit code by SMS (through the outbox), at most once a minute."""
    from portal.notify.service import notify

    if user.phone_index is None:
        raise DomainError(_l("Add a mobile number first."), field="phone")
    now = utcnow()
    latest = await db.scalar(
        select(PhoneCode).where(PhoneCode.user_id == user.id).order_by(PhoneCode.id.desc()).limit(1)
    )
    if latest is not None and now - latest.created_at < PHONE_CODE_INTERVAL:
        wait = int((PHONE_CODE_INTERVAL - (now - latest.created_at)).total_seconds()) + 1
        raise DomainError(
            _l("A code was just sent. Wait {seconds} seconds before asking again.", seconds=wait),
            field="code",
        )
    code = f"{secrets.randbelow(1_000_000):06d}"
    db.add(
        PhoneCode(
            user_id=user.id,
            code_digest=_code_digest(settings, user.id, code),
            expires_at=now + PHONE_CODE_TTL,
        )
    )
    await notify(
        db,
        user.id,
        _l("Verification code"),
        _l("Your Jiefen verification code is {code}. It is valid for 10 minutes.", code=code),
        channels=("sms",),
    )
    record(db, user.id, "user.phone_code_sent", "user", user.id)
    await db.commit()


async def verify_phone_code(db: AsyncSession, settings: Settings, user: User, code: str) -> None:
    now = utcnow()
    latest = await db.scalar(
        select(PhoneCode)
        .where(PhoneCode.user_id == user.id, PhoneCode.used_at.is_(None))
        .order_by(PhoneCode.id.desc())
        .limit(1)
    )
    if latest is None or latest.expires_at <= now:
        raise DomainError(_l("The code has expired. Ask for a new one."), field="code")
    if latest.attempts >= PHONE_CODE_MAX_ATTEMPTS:
        raise DomainError(_l("Too many wrong codes. Ask for a new one."), field="code")
    latest.attempts += 1
    if not hmac.compare_digest(latest.code_digest, _code_digest(settings, user.id, code.strip())):
        await db.commit()
        raise DomainError(
            _l("The code is wrong. Check the text message and try again."), field="code"
        )
    latest.used_at = now
    user.phone_verified_at = now
    record(db, user.id, "user.phone_verified", "user", user.id)
    # Cases a firm or court imported for this number are now this person's.
    from portal.cases.imports import claim_imported_cases

    await claim_imported_cases(db, user)
    await db.commit()
