"""audit: digests of the audit trail (audit_digests), each event's digest

Revision ID: b2c3d4e5f6a7
Revises: a1b2c3d4e5f6
Create Date: 2026-12-05 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2c3d4e5f6a7"
down_revision: str | None = "a1b2c3d4e5f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("first_event_id", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("prev_sha256", sa.String(length=64), nullable=True),
        sa.Column("leaf_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["leaf_id"],
            ["evidence_leaves.id"],
            name=op.f("fk_audit_digests_leaf_id_evidence_leaves"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_digests")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_audit_events_digest_id_audit_digests", "audit_digests", ["digest_id"], ["id"]
        )
        batch_op.create_index("ix_audit_events_digest_id", ["digest_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_digest_id")
        batch_op.drop_constraint("fk_audit_events_digest_id_audit_digests", type_="foreignkey")
        batch_op.drop_column("digest_id")
    op.drop_table("audit_digests")
