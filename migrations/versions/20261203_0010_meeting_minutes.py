"""meeting minutes: versions of a session's minutes and the parties' answers to them

Each version keeps its text and the SHA-256 the parties confirm; a confirmed version points
at its evidence-log leaf. One answer per side and version.

Revision ID: b0c9d8e7f6a5
Revises: a9b8c7d6e5f4
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "b0c9d8e7f6a5"
down_revision: str | None = "a9b8c7d6e5f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "meeting_minutes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("saves", sa.Integer(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("saved_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("presented_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("leaf_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "state IN ('draft', 'presented', 'confirmed', 'superseded')",
            name=op.f("ck_meeting_minutes_state_known"),
        ),
        sa.CheckConstraint("number >= 1", name=op.f("ck_meeting_minutes_number_positive")),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_meeting_minutes_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["leaf_id"],
            ["evidence_leaves.id"],
            name=op.f("fk_meeting_minutes_leaf_id_evidence_leaves"),
        ),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_meeting_minutes_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meeting_minutes")),
        # One number per version of a session; the newest is read by this index too.
        sa.UniqueConstraint(
            "meeting_id", "number", name=op.f("uq_meeting_minutes_meeting_id_number")
        ),
    )

    op.create_table(
        "meeting_minutes_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(length=12), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(length=10), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "side IN ('claimant', 'respondent')",
            name=op.f("ck_meeting_minutes_responses_side_known"),
        ),
        sa.CheckConstraint(
            "answer IN ('confirmed', 'declined')",
            name=op.f("ck_meeting_minutes_responses_answer_known"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_meeting_minutes_responses_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["meeting_minutes.id"],
            name=op.f("fk_meeting_minutes_responses_version_id_meeting_minutes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meeting_minutes_responses")),
        sa.UniqueConstraint(
            "version_id", "side", name=op.f("uq_meeting_minutes_responses_version_id_side")
        ),
    )
    with op.batch_alter_table("meeting_minutes_responses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_meeting_minutes_responses_version_id"), ["version_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("meeting_minutes_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_meeting_minutes_responses_version_id"))
    op.drop_table("meeting_minutes_responses")
    op.drop_table("meeting_minutes")
