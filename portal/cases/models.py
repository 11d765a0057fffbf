"""Cases: the dispute, its timeline, materials, numbering, per-committee rules, recusals."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow

SIMPLE_CATEGORIES = ["credit_card", "small_loan", "small_business_loan", "personal_business_loan"]


class Case(Base):
    """One dispute. Personal data of the claimant and agent is encrypted; see cases.service."""

    __tablename__ = "cases"
    __table_args__ = (
        # The staff list reads these in order and stops after a page (migrations 0005, 0007).
        # Trailing columns let a filter be checked in the index, without reading the case;
        # on PostgreSQL the id is included too, so that the scan never visits the table
        # (SQLite's indexes hold the rowid anyway).
        Index(
            "ix_cases_committee_status_submitted",
            "committee_id",
            "status",
            "submitted_at",
            "category",
            "complexity",
            postgresql_include=["id"],
        ),
        Index(
            "ix_cases_committee_submitted",
            "committee_id",
            "submitted_at",
            "status",
            "category",
            "close_due",
            "firm_response",
            "firm_response_due",
            "complexity",
            postgresql_include=["id"],
        ),
        Index(
            "ix_cases_committee_amount",
            "committee_id",
            "amount_fen",
            "category",
            "status",
            postgresql_include=["id"],
        ),
        Index("ix_cases_submitted_at", "submitted_at"),
        # The oversight figures (portal.analytics.stats) read only this index: every column
        # they group or add up, in filing order (migration 0016).
        Index(
            "ix_cases_stats",
            "submitted_at",
            "committee_id",
            "category",
            "respondent_firm_id",
            "mediator_id",
            "outcome",
            "handling_days",
            "accepted_at",
            "firm_response",
            "amount_fen",
            "agreed_fen",
            "waived_fen",
        ),
        Index("ix_cases_status_updated", "status", "updated_at"),
        # A batch import's own reference for each case, unique per importer (migration 0021):
        # importing the same file again finds its cases and adds none twice.
        Index("ix_cases_import_ref", "import_source", "external_ref", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(24), unique=True)
    committee_id: Mapped[int] = mapped_column(ForeignKey("committees.id"), index=True)
    status: Mapped[str] = mapped_column(String(30), default="draft")
    category: Mapped[str] = mapped_column(String(30), default="")
    filer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # "self": the claimant files; "agent": someone files for the claimant with a power of attorney
    filed_as: Mapped[str] = mapped_column(String(10), default="self")

    claimant_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    claimant_name_index: Mapped[str | None] = mapped_column(String(64), index=True)
    claimant_id_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    claimant_id_index: Mapped[str | None] = mapped_column(String(64), index=True)
    claimant_phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    claimant_phone_index: Mapped[str | None] = mapped_column(String(64), index=True)

    agent_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    agent_phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    agent_phone_index: Mapped[str | None] = mapped_column(String(64), index=True)
    agent_org: Mapped[str] = mapped_column(String(120), default="")

    respondent_firm_id: Mapped[int | None] = mapped_column(ForeignKey("firms.id"), index=True)
    respondent_name: Mapped[str] = mapped_column(String(120), default="")
    respondent_credit_code: Mapped[str | None] = mapped_column(String(18))

    amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    outcomes: Mapped[list[str]] = mapped_column(JSON, default=list)
    facts: Mapped[str] = mapped_column(Text, default="")
    incident_date: Mapped[date | None] = mapped_column()
    eligibility: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    complexity: Mapped[str | None] = mapped_column(String(10))
    triage_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    mediator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    requested_items: Mapped[list[str]] = mapped_column(JSON, default=list)

    firm_response: Mapped[str | None] = mapped_column(String(10))
    firm_offer_fen: Mapped[int | None] = mapped_column(BigInteger)
    firm_terms: Mapped[str] = mapped_column(Text, default="")
    firm_responded_at: Mapped[datetime | None] = mapped_column()

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column()
    accepted_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    firm_response_due: Mapped[date | None] = mapped_column(index=True)
    close_due: Mapped[date | None] = mapped_column(index=True)
    # The close clock stops while the claimant owes material.
    paused_at: Mapped[datetime | None] = mapped_column()
    paused_working_days: Mapped[int] = mapped_column(Integer, default=0)
    filing_ip: Mapped[str] = mapped_column(String(45), default="")
    # How the case ended, set once by cases.service when it reaches settled, failed,
    # withdrawn, rejected or ineligible (a settled case stays "settled" when fulfilled and
    # closed); the working days it took from acceptance (else submission), pauses excluded;
    # and, when an agreement took effect, what it gives (refund and compensation) and waives.
    outcome: Mapped[str | None] = mapped_column(String(12))
    outcome_at: Mapped[datetime | None] = mapped_column()
    handling_days: Mapped[int | None] = mapped_column(Integer)
    agreed_fen: Mapped[int | None] = mapped_column(BigInteger)
    waived_fen: Mapped[int | None] = mapped_column(BigInteger)
    # The wizard's first form carries a random key: submitting it twice opens one draft.
    form_key: Mapped[str | None] = mapped_column(String(40), unique=True)
    # Cases that came in a batch import (cases.imports): the batch, the importer's own
    # reference ("firm:12" or "committee:3" with the file's reference column), and for a
    # court-referred case (委派调解) the court's case number; the court and its deadline are
    # the batch's.
    import_batch_id: Mapped[int | None] = mapped_column(Integer, index=True)
    import_source: Mapped[str | None] = mapped_column(String(24))
    external_ref: Mapped[str | None] = mapped_column(String(64))
    court_case_number: Mapped[str | None] = mapped_column(String(60))


class CaseEvent(Base):
    """The timeline: transitions, messages, responses, assignments. Append-only."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(30))
    to_status: Mapped[str | None] = mapped_column(String(30))
    body: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Who sees it besides staff and the mediator: "all", "claimant", "firm" or "staff" only.
    visibility: Mapped[str] = mapped_column(String(10), default="all")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Its note was erased with the claimant's personal data (its leaf's digest stands).
    erased_at: Mapped[datetime | None] = mapped_column()


class CaseMaterial(Base):
    """A file attached to a case (identity proof, contract, power of attorney, requested…)."""

    __tablename__ = "case_materials"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Evidence: what it is, whose it is, and who may see it ("parties": both parties and the
    # mediator; "mediator": the mediator and the committee only, besides the uploader).
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    party: Mapped[str] = mapped_column(String(12), default="claimant")
    visibility: Mapped[str] = mapped_column(String(10), default="parties")
    # Random, in the metadata digest of the leaf, so that the digest cannot be confirmed by
    # guessing a file name or title; erased with the person's other data.
    salt: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(16))
    # The evidence.added leaf, written when the case has a number (at submission for drafts).
    leaf_id: Mapped[int | None] = mapped_column(ForeignKey("evidence_leaves.id"), index=True)
    # Erased with the claimant's personal data: name, title, description and salt cleared, the
    # file deleted; the leaf (its hashes) stands and its receipt still verifies.
    erased_at: Mapped[datetime | None] = mapped_column()


class CaseCounter(Base):
    """The last case number used per committee and year (gap-free, locked while filing)."""

    __tablename__ = "case_counters"

    committee_id: Mapped[int] = mapped_column(ForeignKey("committees.id"), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class CaseRules(Base):
    """Per-committee triage rules (繁简分流) and deadlines in working days."""

    __tablename__ = "case_rules"

    committee_id: Mapped[int] = mapped_column(
        ForeignKey("committees.id", ondelete="CASCADE"), primary_key=True
    )
    simple_max_amount_fen: Mapped[int] = mapped_column(BigInteger, default=5_000_000)
    simple_categories: Mapped[list[str]] = mapped_column(JSON, default=lambda: SIMPLE_CATEGORIES)
    agent_is_complex: Mapped[bool] = mapped_column(default=True)
    firm_response_days: Mapped[int] = mapped_column(Integer, default=5)
    simple_close_days: Mapped[int] = mapped_column(Integer, default=15)
    complex_close_days: Mapped[int] = mapped_column(Integer, default=30)


class RecusalRequest(Base):
    """A party asks for another mediator; an administrator decides."""

    __tablename__ = "recusal_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    mediator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decision_note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()


class ImportBatch(Base):
    """A file of cases uploaded by a firm or a committee (cases.imports): checked first (the
    dry run and its report), then imported all-or-nothing or its valid rows only."""

    __tablename__ = "import_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    # "firm": a firm's own complaints; "court": cases a court referred to the committee.
    kind: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(24), index=True)
    firm_id: Mapped[int | None] = mapped_column(ForeignKey("firms.id"), index=True)
    committee_id: Mapped[int | None] = mapped_column(ForeignKey("committees.id"), index=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    filename: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    # The uploaded file, encrypted in the blob store until the import ends, then deleted.
    sha256: Mapped[str] = mapped_column(String(64))
    court_name: Mapped[str] = mapped_column(String(120), default="")
    court_deadline: Mapped[date | None] = mapped_column()
    # checking -> checked | refused (the file itself) -> importing -> imported | failed
    status: Mapped[str] = mapped_column(String(12), default="checking")
    mode: Mapped[str | None] = mapped_column(String(12))
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_valid: Mapped[int] = mapped_column(Integer, default=0)
    rows_invalid: Mapped[int] = mapped_column(Integer, default=0)
    rows_existing: Mapped[int] = mapped_column(Integer, default=0)
    rows_imported: Mapped[int] = mapped_column(Integer, default=0)
    # The file's own problem, or the row-by-row report: [[row, column, msgid, params], ...]
    error: Mapped[list[Any]] = mapped_column(JSON, default=list)
    report: Mapped[list[Any]] = mapped_column(JSON, default=list)
    first_number: Mapped[str | None] = mapped_column(String(24))
    last_number: Mapped[str | None] = mapped_column(String(24))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When its check or import was last started: a batch busy for longer than any run takes
    # was cut off (the process running it stopped).
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
