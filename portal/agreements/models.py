"""Settlement agreements (调解协议书): versions, comments, signatures, signing codes.

A case has at most one agreement. The mediator drafts it from the case and the session's
outcome; each save is a new version, kept with its terms (structured data), the Chinese legal
text and the English reading copy made from them, and the SHA-256 of the PDF that parties
sign. When the mediator puts a version up for signature, each required party signs exactly
that PDF; the agreement takes effect once every required party has. A new version after any
signature voids every signature (they stay, marked void, with the reason).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class AgreementStatus(StrEnum):
    DRAFTING = "drafting"  # the mediator edits; parties read and comment
    SIGNING = "signing"  # the current version is up for signature
    EFFECTIVE = "effective"  # every required party signed it


class InstalmentState(StrEnum):
    DUE = "due"  # not yet paid (overdue once its date has passed)
    PAID = "paid"  # the firm recorded the payment; the claimant has not answered
    CONFIRMED = "confirmed"  # the claimant confirmed receipt
    DISPUTED = "disputed"  # the claimant says it did not arrive as recorded


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Agreement(Base):
    __tablename__ = "agreements"
    __table_args__ = (CheckConstraint(_one_of("status", AgreementStatus), name="status_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    # The session whose outcome it records, if it came from one.
    meeting_id: Mapped[int | None] = mapped_column(ForeignKey("meetings.id", ondelete="SET NULL"))
    template: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(12), default=AgreementStatus.DRAFTING.value)
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    effective_at: Mapped[datetime | None] = mapped_column()
    # The signed copy (every signature, the receipt's QR code), rendered once when first asked
    # for and kept: the same bytes for everyone, and no render per download.
    signed_pdf: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgreementVersion(Base):
    __tablename__ = "agreement_versions"
    __table_args__ = (
        UniqueConstraint("agreement_id", "number"),
        CheckConstraint("number >= 1", name="number_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The clauses as the parties read them: Chinese (the legal text) and the English copy.
    clauses_zh: Mapped[list[str]] = mapped_column(JSON)
    clauses_en: Mapped[list[str]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The PDF to sign (the version without signatures), rendered once when the version is
    # saved and kept: what each signature binds by its hash, whatever later upgrades of the
    # renderer would make of the same row.
    # Deferred: listing versions reads none of them (version_pdf reads one).
    pdf: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    pdf_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgreementComment(Base):
    __tablename__ = "agreement_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("agreement_versions.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgreementSignature(Base):
    __tablename__ = "agreement_signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[int] = mapped_column(ForeignKey("agreement_versions.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    side: Mapped[str] = mapped_column(String(12))  # claimant, respondent
    typed_name: Mapped[str] = mapped_column(String(100))
    # Password re-entered + one-time code by sms or email + typed name (+ drawn signature).
    method: Mapped[str] = mapped_column(String(40))
    drawn: Mapped[str | None] = mapped_column(Text)  # the drawn signature as an SVG path, if any
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    leaf_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), ForeignKey("evidence_leaves.id"), index=True
    )
    voided_at: Mapped[datetime | None] = mapped_column()
    void_reason: Mapped[str] = mapped_column(Text, default="")


class SigningCode(Base):
    """A one-time code sent to a signer's verified phone or e-mail for one agreement."""

    __tablename__ = "agreement_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(10))  # sms, email
    code_digest: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instalment(Base):
    """One payment the agreement obliges the firm to make (a lump sum is one instalment)."""

    __tablename__ = "agreement_instalments"
    __table_args__ = (
        UniqueConstraint("agreement_id", "number"),
        CheckConstraint(_one_of("state", InstalmentState), name="state_known"),
        CheckConstraint("amount_fen > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("agreements.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    due_on: Mapped[date] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(12), default=InstalmentState.DUE.value)
    paid_fen: Mapped[int | None] = mapped_column(BigInteger)
    paid_on: Mapped[date | None] = mapped_column()
    reference: Mapped[str] = mapped_column(String(100), default="")
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime | None] = mapped_column()
    answered_at: Mapped[datetime | None] = mapped_column()
    dispute_reason: Mapped[str] = mapped_column(Text, default="")
    reminded_due_at: Mapped[datetime | None] = mapped_column()
    reminded_overdue_at: Mapped[datetime | None] = mapped_column()


class Survey(Base):
    """A party's rating of a closed case: fairness, speed, the mediator and the platform, each
    1 to 5, and an optional comment. One per side (the firm answers through any one of its
    representatives)."""

    __tablename__ = "case_surveys"
    __table_args__ = (
        UniqueConstraint("case_id", "side"),
        CheckConstraint("fairness BETWEEN 1 AND 5", name="fairness_range"),
        CheckConstraint("speed BETWEEN 1 AND 5", name="speed_range"),
        CheckConstraint("mediator BETWEEN 1 AND 5", name="mediator_range"),
        CheckConstraint("platform BETWEEN 1 AND 5", name="platform_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    side: Mapped[str] = mapped_column(String(12))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    fairness: Mapped[int] = mapped_column(Integer)
    speed: Mapped[int] = mapped_column(Integer)
    mediator: Mapped[int] = mapped_column(Integer)
    platform: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JudicialStatus(StrEnum):
    REQUESTED = "requested"  # one side asked; waiting for the other to join
    APPLIED = "applied"  # both sides apply: the package is ready for the court
    CONFIRMED = "confirmed"  # the court confirmed the agreement (entered by staff)
    REFUSED = "refused"  # the court refused to confirm it (entered by staff)


class JudicialApplication(Base):
    """A joint application to a court to confirm an agreement in effect (司法确认)."""

    __tablename__ = "judicial_applications"
    __table_args__ = (CheckConstraint(_one_of("status", JudicialStatus), name="status_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), unique=True
    )
    court: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(12), default=JudicialStatus.REQUESTED.value)
    claimant_joined_at: Mapped[datetime | None] = mapped_column()
    respondent_joined_at: Mapped[datetime | None] = mapped_column()
    applied_at: Mapped[datetime | None] = mapped_column()
    court_case_number: Mapped[str] = mapped_column(String(60), default="")
    decided_on: Mapped[date | None] = mapped_column()
    decision_note: Mapped[str] = mapped_column(Text, default="")
    entered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CourtReferral(Base):
    """A case the court referred to mediation (委派调解): the court, its case number, and when
    the outcome was reported back to it."""

    __tablename__ = "court_referrals"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    court: Mapped[str] = mapped_column(String(120))
    court_case_number: Mapped[str] = mapped_column(String(60))
    referred_on: Mapped[date] = mapped_column()
    recorded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reported_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UndisputedFacts(Base):
    """The record of undisputed facts (无争议事实记载) of a case mediation did not settle: the
    mediator writes it, each side confirms it; a change clears the confirmations."""

    __tablename__ = "undisputed_facts"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    claimant_confirmed_at: Mapped[datetime | None] = mapped_column()
    respondent_confirmed_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
