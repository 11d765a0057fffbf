"""cases: batch imports of cases (import_batches), and each imported case's reference

Revision ID: a1b2c3d4e5f6
Revises: f0a1b2c3d4e5
Create Date: 2026-12-05 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a1b2c3d4e5f6"
down_revision: str | None = "f0a1b2c3d4e5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("firm_id", sa.Integer(), nullable=True),
        sa.Column("committee_id", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("court_name", sa.String(length=120), nullable=False),
        sa.Column("court_deadline", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("mode", sa.String(length=12), nullable=True),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_valid", sa.Integer(), nullable=False),
        sa.Column("rows_invalid", sa.Integer(), nullable=False),
        sa.Column("rows_existing", sa.Integer(), nullable=False),
        sa.Column("rows_imported", sa.Integer(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("first_number", sa.String(length=24), nullable=True),
        sa.Column("last_number", sa.String(length=24), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["committee_id"],
            ["committees.id"],
            name=op.f("fk_import_batches_committee_id_committees"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_import_batches_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["firm_id"], ["firms.id"], name=op.f("fk_import_batches_firm_id_firms")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_batches")),
    )
    with op.batch_alter_table("import_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_import_batches_source"), ["source"], unique=False)
        batch_op.create_index(batch_op.f("ix_import_batches_firm_id"), ["firm_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_import_batches_committee_id"), ["committee_id"], unique=False
        )

    # Plain ADD COLUMN and CREATE INDEX on both databases (no batch copy of `cases` and its
    # search triggers); the batch link is an informational id, without a foreign key.
    op.add_column("cases", sa.Column("import_batch_id", sa.Integer(), nullable=True))
    op.add_column("cases", sa.Column("import_source", sa.String(length=24), nullable=True))
    op.add_column("cases", sa.Column("external_ref", sa.String(length=64), nullable=True))
    op.add_column("cases", sa.Column("court_case_number", sa.String(length=60), nullable=True))
    op.create_index("ix_cases_import_batch_id", "cases", ["import_batch_id"], unique=False)
    op.create_index("ix_cases_import_ref", "cases", ["import_source", "external_ref"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_cases_import_ref", table_name="cases")
    op.drop_index("ix_cases_import_batch_id", table_name="cases")
    for name in ("court_case_number", "external_ref", "import_source", "import_batch_id"):
        op.drop_column("cases", name)

    with op.batch_alter_table("import_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_import_batches_committee_id"))
        batch_op.drop_index(batch_op.f("ix_import_batches_firm_id"))
        batch_op.drop_index(batch_op.f("ix_import_batches_source"))
    op.drop_table("import_batches")
