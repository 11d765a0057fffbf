"""oversight: template-complaint fingerprints (MinHash of each filing's facts), the pairs of
filings found alike, and indexes for exact matches of agent organisation and filing address

Cases filed before this revision get their fingerprints when the likeness index is first
rebuilt (portal.analytics.likeness.LikenessIndex.rebuild), not here: that needs the shared
shingling code and may take a while on a large table.

Revision ID: c7d8e9f0a1b2
Revises: b6c7d8e9f0a1
Create Date: 2026-12-03 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "c7d8e9f0a1b2"
down_revision: str | None = "b6c7d8e9f0a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_fingerprints",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("minhash", sa.LargeBinary(), nullable=False),
        sa.Column("compared", sa.Boolean(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_fingerprints_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["committee_id"],
            ["committees.id"],
            name=op.f("fk_case_fingerprints_committee_id_committees"),
        ),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_case_fingerprints")),
    )
    with op.batch_alter_table("case_fingerprints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_case_fingerprints_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "case_likeness_pairs",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("other_id", sa.Integer(), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("case_id < other_id", name=op.f("ck_case_likeness_pairs_ordered")),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_likeness_pairs_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["other_id"],
            ["cases.id"],
            name=op.f("fk_case_likeness_pairs_other_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "other_id", name=op.f("pk_case_likeness_pairs")),
    )
    with op.batch_alter_table("case_likeness_pairs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_case_likeness_pairs_other_id"), ["other_id"], unique=False
        )

    # Plain CREATE INDEX on both databases (no batch copy of `cases` and its search triggers).
    op.create_index("ix_cases_agent_org", "cases", ["agent_org"], unique=False)
    op.create_index("ix_cases_filing_ip", "cases", ["filing_ip"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_cases_filing_ip", table_name="cases")
    op.drop_index("ix_cases_agent_org", table_name="cases")

    with op.batch_alter_table("case_likeness_pairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_likeness_pairs_other_id"))
    op.drop_table("case_likeness_pairs")

    with op.batch_alter_table("case_fingerprints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_fingerprints_created_at"))
    op.drop_table("case_fingerprints")
