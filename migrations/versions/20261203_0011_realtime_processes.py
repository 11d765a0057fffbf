"""realtime processes and evidence in chat: each Socket.IO server process says it is alive and
the session connections it holds name it, so the connections of a process that died can be
removed; a chat message may show an evidence item of the case

Revision ID: c1d2e3f4a5b6
Revises: b0c9d8e7f6a5
Create Date: 2026-12-03 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "c1d2e3f4a5b6"
down_revision: str | None = "b0c9d8e7f6a5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "realtime_processes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("started_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_realtime_processes")),
    )
    with op.batch_alter_table("realtime_processes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_realtime_processes_seen_at"), ["seen_at"])
    with op.batch_alter_table("meeting_connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("process", sa.String(length=32), server_default="", nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_meeting_connections_process"), ["process"])
    with op.batch_alter_table("meeting_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("material_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_meeting_messages_material_id_case_materials"),
            "case_materials",
            ["material_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("meeting_messages", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_meeting_messages_material_id_case_materials"), type_="foreignkey"
        )
        batch_op.drop_column("material_id")
    with op.batch_alter_table("meeting_connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_meeting_connections_process"))
        batch_op.drop_column("process")
    with op.batch_alter_table("realtime_processes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_realtime_processes_seen_at"))
    op.drop_table("realtime_processes")
