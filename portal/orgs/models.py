"""Organisations: committees, firms, mediator profiles and mediators' declared ties to firms."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, utcnow

if TYPE_CHECKING:
    from portal.accounts.models import User


class Committee(Base):
    """调解委员会: takes disputes of some categories in a region; numbers its cases."""

    __tablename__ = "committees"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    name_en: Mapped[str | None] = mapped_column(String(160))
    region: Mapped[str] = mapped_column(String(120))
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    case_prefix: Mapped[str] = mapped_column(String(6), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Firm(Base):
    """A financial or consumer firm that disputes are filed against."""

    __tablename__ = "firms"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    name_en: Mapped[str | None] = mapped_column(String(160))
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    industry: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MediatorProfile(Base):
    """A mediator's specialties and grade (专业等级); the user row says which committee."""

    __tablename__ = "mediator_profiles"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    specialties: Mapped[list[str]] = mapped_column(JSON, default=list)
    grade: Mapped[str] = mapped_column(String(20), default="junior")
    user: Mapped[User] = relationship(lazy="joined")
    ties: Mapped[list[MediatorTie]] = relationship(
        order_by="MediatorTie.id", cascade="all, delete-orphan", lazy="selectin"
    )


class MediatorTie(Base):
    """A tie a mediator declares to a firm; it excludes them from that firm's cases."""

    __tablename__ = "mediator_ties"
    __table_args__ = (UniqueConstraint("mediator_id", "firm_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mediator_id: Mapped[int] = mapped_column(
        ForeignKey("mediator_profiles.user_id", ondelete="CASCADE"), index=True
    )
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    declared_at: Mapped[datetime] = mapped_column(default=utcnow)
    firm: Mapped[Firm] = relationship(lazy="joined")
