"""agreements: settlement agreements with their versions, comments, signatures, signing codes
and the instalments that fulfil them; satisfaction surveys; joint applications for judicial
confirmation; court referrals; records of undisputed facts

Revision ID: d2e3f4a5b6c7
Revises: c1d2e3f4a5b6
Create Date: 2026-12-03 16:06:18.297904
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "d2e3f4a5b6c7"
down_revision: str | None = "c1d2e3f4a5b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agreements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=True),
        sa.Column("template", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("effective_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('drafting', 'signing', 'effective')",
            name=op.f("ck_agreements_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_agreements_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_agreements_meeting_id_meetings"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreements")),
        sa.UniqueConstraint("case_id", name=op.f("uq_agreements_case_id")),
    )
    op.create_table(
        "agreement_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("code_digest", sa.String(length=64), nullable=False),
        sa.Column("expires_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_agreement_codes_agreement_id_agreements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_agreement_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_codes")),
    )
    with op.batch_alter_table("agreement_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agreement_codes_user_id"), ["user_id"], unique=False)

    op.create_table(
        "agreement_instalments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("paid_fen", sa.BigInteger(), nullable=True),
        sa.Column("paid_on", sa.Date(), nullable=True),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.Column("recorded_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("answered_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dispute_reason", sa.Text(), nullable=False),
        sa.Column("reminded_due_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reminded_overdue_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('due', 'paid', 'confirmed', 'disputed')",
            name=op.f("ck_agreement_instalments_state_known"),
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_agreement_instalments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_agreement_instalments_agreement_id_agreements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_agreement_instalments_recorded_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_instalments")),
        sa.UniqueConstraint(
            "agreement_id", "number", name=op.f("uq_agreement_instalments_agreement_id_number")
        ),
    )
    with op.batch_alter_table("agreement_instalments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agreement_instalments_due_on"), ["due_on"], unique=False
        )

    op.create_table(
        "agreement_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("clauses_zh", sa.JSON(), nullable=False),
        sa.Column("clauses_en", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("pdf_size", sa.Integer(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("number >= 1", name=op.f("ck_agreement_versions_number_positive")),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_agreement_versions_agreement_id_agreements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_agreement_versions_author_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_versions")),
        sa.UniqueConstraint(
            "agreement_id", "number", name=op.f("uq_agreement_versions_agreement_id_number")
        ),
    )
    op.create_table(
        "agreement_comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_agreement_comments_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["agreement_versions.id"],
            name=op.f("fk_agreement_comments_version_id_agreement_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_comments")),
    )
    with op.batch_alter_table("agreement_comments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agreement_comments_version_id"), ["version_id"], unique=False
        )

    op.create_table(
        "agreement_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(length=12), nullable=False),
        sa.Column("typed_name", sa.String(length=100), nullable=False),
        sa.Column("method", sa.String(length=40), nullable=False),
        sa.Column("drawn", sa.Text(), nullable=True),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("signed_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("leaf_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("voided_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_agreement_signatures_agreement_id_agreements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["leaf_id"],
            ["evidence_leaves.id"],
            name=op.f("fk_agreement_signatures_leaf_id_evidence_leaves"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_agreement_signatures_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["agreement_versions.id"],
            name=op.f("fk_agreement_signatures_version_id_agreement_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_signatures")),
    )
    with op.batch_alter_table("agreement_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agreement_signatures_agreement_id"), ["agreement_id"], unique=False
        )

    op.create_table(
        "case_surveys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(length=12), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("fairness", sa.Integer(), nullable=False),
        sa.Column("speed", sa.Integer(), nullable=False),
        sa.Column("mediator", sa.Integer(), nullable=False),
        sa.Column("platform", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("fairness BETWEEN 1 AND 5", name=op.f("ck_case_surveys_fairness_range")),
        sa.CheckConstraint("speed BETWEEN 1 AND 5", name=op.f("ck_case_surveys_speed_range")),
        sa.CheckConstraint("mediator BETWEEN 1 AND 5", name=op.f("ck_case_surveys_mediator_range")),
        sa.CheckConstraint("platform BETWEEN 1 AND 5", name=op.f("ck_case_surveys_platform_range")),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_surveys_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_case_surveys_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_surveys")),
        sa.UniqueConstraint("case_id", "side", name=op.f("uq_case_surveys_case_id_side")),
    )

    op.create_table(
        "court_referrals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("court", sa.String(length=120), nullable=False),
        sa.Column("court_case_number", sa.String(length=60), nullable=False),
        sa.Column("referred_on", sa.Date(), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=False),
        sa.Column("reported_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_court_referrals_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_court_referrals_recorded_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_court_referrals")),
        sa.UniqueConstraint("case_id", name=op.f("uq_court_referrals_case_id")),
    )
    op.create_table(
        "judicial_applications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agreement_id", sa.Integer(), nullable=False),
        sa.Column("court", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("claimant_joined_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("respondent_joined_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("applied_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("court_case_number", sa.String(length=60), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=False),
        sa.Column("entered_by", sa.Integer(), nullable=True),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('requested', 'applied', 'confirmed', 'refused')",
            name=op.f("ck_judicial_applications_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_judicial_applications_agreement_id_agreements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["entered_by"], ["users.id"], name=op.f("fk_judicial_applications_entered_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judicial_applications")),
        sa.UniqueConstraint("agreement_id", name=op.f("uq_judicial_applications_agreement_id")),
    )
    op.create_table(
        "undisputed_facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("claimant_confirmed_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("respondent_confirmed_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_undisputed_facts_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_undisputed_facts_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_undisputed_facts")),
        sa.UniqueConstraint("case_id", name=op.f("uq_undisputed_facts_case_id")),
    )


def downgrade() -> None:
    op.drop_table("undisputed_facts")
    op.drop_table("judicial_applications")
    op.drop_table("court_referrals")
    op.drop_table("case_surveys")
    with op.batch_alter_table("agreement_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_signatures_agreement_id"))

    op.drop_table("agreement_signatures")
    with op.batch_alter_table("agreement_comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_comments_version_id"))

    op.drop_table("agreement_comments")
    op.drop_table("agreement_versions")
    with op.batch_alter_table("agreement_instalments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_instalments_due_on"))

    op.drop_table("agreement_instalments")
    with op.batch_alter_table("agreement_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_codes_user_id"))

    op.drop_table("agreement_codes")
    op.drop_table("agreements")
