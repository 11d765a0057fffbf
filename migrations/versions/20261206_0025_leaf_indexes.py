"""evidence: index the leaf of each record a leaf stands for (evidence items, minutes, agreement
signatures, recordings), so a full verification finds a page's records without scanning them

Revision ID: e5f6a7b8c9d0
Revises: d4e5f6a7b8c9
Create Date: 2026-12-06 02:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e5f6a7b8c9d0"
down_revision: str | None = "d4e5f6a7b8c9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("case_materials", "meeting_minutes", "agreement_signatures", "meeting_recordings")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(op.f(f"ix_{table}_leaf_id"), table, ["leaf_id"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_index(op.f(f"ix_{table}_leaf_id"), table_name=table)
