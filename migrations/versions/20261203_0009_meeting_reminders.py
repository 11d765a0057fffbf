"""meeting reminders and calendar attachments

A session remembers when its current time was set (``planned_at``), when its 24-hour and
15-minute reminders went out (claimed by an UPDATE that only matches while the column is still
empty) and its iCalendar SEQUENCE; a notification may name the attachment its email carries.

Revision ID: a9b8c7d6e5f4
Revises: cba5c63a314f
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "a9b8c7d6e5f4"
down_revision: str | None = "cba5c63a314f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("planned_at", portal.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("calendar_sequence", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("reminded_day_at", portal.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("reminded_soon_at", portal.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_meetings_status_starts_at", ["status", "starts_at"], unique=False)
    # Sessions scheduled before this revision were planned when they were created.
    op.execute("UPDATE meetings SET planned_at = created_at")
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.alter_column(
            "planned_at", existing_type=portal.db.UTCDateTime(timezone=True), nullable=False
        )

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attachment", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("attachment")
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.drop_index("ix_meetings_status_starts_at")
        batch_op.drop_column("reminded_soon_at")
        batch_op.drop_column("reminded_day_at")
        batch_op.drop_column("calendar_sequence")
        batch_op.drop_column("planned_at")
