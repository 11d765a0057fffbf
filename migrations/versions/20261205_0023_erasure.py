"""erasure: evidence items and timeline notes erased with a person's data (erased_at)

Revision ID: c3d4e5f6a7b8
Revises: b2c3d4e5f6a7
Create Date: 2026-12-05 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3d4e5f6a7b8"
down_revision: str | None = "b2c3d4e5f6a7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("case_materials", sa.Column("erased_at", sa.DateTime(timezone=True)))
    op.add_column("case_events", sa.Column("erased_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
    with op.batch_alter_table("case_materials", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
