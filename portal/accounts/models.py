"""Accounts: users, their login sessions, login throttles and invitations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class User(Base):
    """Anyone who logs in. Phone and email are encrypted; their blind indexes allow login."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(
            "role IN ('consumer', 'firm_rep', 'mediator', 'committee_admin', 'platform_admin')",
            name="role_known",
        ),
        CheckConstraint("role <> 'firm_rep' OR firm_id IS NOT NULL", name="firm_rep_has_firm"),
        CheckConstraint(
            "role NOT IN ('mediator', 'committee_admin') OR committee_id IS NOT NULL",
            name="staff_have_committee",
        ),
        CheckConstraint("phone_index IS NOT NULL OR email_index IS NOT NULL", name="has_login"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(20), index=True)
    display_name: Mapped[str] = mapped_column(String(60))
    phone_index: Mapped[str | None] = mapped_column(String(64), unique=True)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_index: Mapped[str | None] = mapped_column(String(64), unique=True)
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    password_hash: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(8), default="zh_CN")
    large_text: Mapped[bool] = mapped_column(default=False)
    firm_id: Mapped[int | None] = mapped_column(ForeignKey("firms.id"), index=True)
    committee_id: Mapped[int | None] = mapped_column(ForeignKey("committees.id"), index=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    phone_verified_at: Mapped[datetime | None] = mapped_column()
    # Data retention reads it: an account unused for the retention period may be erased.
    last_login_at: Mapped[datetime | None] = mapped_column()


class UserSession(Base):
    """A logged-in browser. The cookie holds a random token; this row holds its SHA-256."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class LoginThrottle(Base):
    """Failed logins per account (blind index) and per IP, with the delay they earned."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(90), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow)
    blocked_until: Mapped[datetime | None] = mapped_column()


class Invitation(Base):
    """A link that lets one person create a staff or firm account bound to an organisation."""

    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint(
            "role IN ('firm_rep', 'mediator', 'committee_admin', 'platform_admin')",
            name="role_invitable",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    invitee_name: Mapped[str] = mapped_column(String(60))
    firm_id: Mapped[int | None] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"))
    committee_id: Mapped[int | None] = mapped_column(
        ForeignKey("committees.id", ondelete="CASCADE")
    )
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    accepted_at: Mapped[datetime | None] = mapped_column()
    accepted_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    revoked_at: Mapped[datetime | None] = mapped_column()


class PhoneCode(Base):
    """A one-time code sent by SMS (through the outbox) to verify a user's phone number."""

    __tablename__ = "phone_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_digest: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
