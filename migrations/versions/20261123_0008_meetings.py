"""meetings: live mediation sessions, their participants, chat messages and connected sockets

A session's row is also its chat counter (``last_seq``) and its change counter (``version``);
both are only ever incremented by an UPDATE, which locks the row until commit.

Revision ID: cba5c63a314f
Revises: 7a2b3c4d5e6f
Create Date: 2026-11-23 15:26:59.667973
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "cba5c63a314f"
down_revision: str | None = "7a2b3c4d5e6f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROOMS = "'joint', 'caucus_claimant', 'caucus_respondent', 'notes'"


def upgrade() -> None:
    op.create_table(
        "meetings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("mediator_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=True),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("opened_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "mode IN ('video', 'voice', 'text')", name=op.f("ck_meetings_mode_known")
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'open', 'ended', 'cancelled')",
            name=op.f("ck_meetings_status_known"),
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('adjourned', 'settled', 'failed')",
            name=op.f("ck_meetings_outcome_known"),
        ),
        sa.CheckConstraint(
            "duration_minutes BETWEEN 5 AND 480", name=op.f("ck_meetings_duration_sensible")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_meetings_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["mediator_id"], ["users.id"], name=op.f("fk_meetings_mediator_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meetings")),
    )
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_meetings_case_id_starts_at", ["case_id", "starts_at"], unique=False
        )

    op.create_table(
        "meeting_participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(length=12), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("room", sa.String(length=20), nullable=True),
        sa.Column("invited_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("admitted_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "side IN ('claimant', 'respondent', 'mediator', 'observer')",
            name=op.f("ck_meeting_participants_side_known"),
        ),
        sa.CheckConstraint(
            "state IN ('invited', 'waiting', 'admitted', 'removed', 'turned_away')",
            name=op.f("ck_meeting_participants_state_known"),
        ),
        sa.CheckConstraint(
            f"room IS NULL OR room IN ({ROOMS})", name=op.f("ck_meeting_participants_room_known")
        ),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_meeting_participants_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_meeting_participants_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meeting_participants")),
        sa.UniqueConstraint(
            "meeting_id", "user_id", name=op.f("uq_meeting_participants_meeting_id_user_id")
        ),
    )
    with op.batch_alter_table("meeting_participants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_meeting_participants_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "meeting_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("room", sa.String(length=20), nullable=False),
        sa.Column("sender_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"room IN ({ROOMS})", name=op.f("ck_meeting_messages_room_known")),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_meeting_messages_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["users.id"], name=op.f("fk_meeting_messages_sender_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meeting_messages")),
        # Replays read a range of sequence numbers; a retry finds its message by client id.
        sa.UniqueConstraint("meeting_id", "seq", name=op.f("uq_meeting_messages_meeting_id_seq")),
        sa.UniqueConstraint(
            "meeting_id",
            "sender_id",
            "client_id",
            name=op.f("uq_meeting_messages_meeting_id_sender_id_client_id"),
        ),
    )

    op.create_table(
        "meeting_connections",
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("connected_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["meeting_id"],
            ["meetings.id"],
            name=op.f("fk_meeting_connections_meeting_id_meetings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["meeting_participants.id"],
            name=op.f("fk_meeting_connections_participant_id_meeting_participants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("meeting_id", "sid", name=op.f("pk_meeting_connections")),
    )
    with op.batch_alter_table("meeting_connections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_meeting_connections_participant_id"), ["participant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_meeting_connections_sid"), ["sid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("meeting_connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_meeting_connections_sid"))
        batch_op.drop_index(batch_op.f("ix_meeting_connections_participant_id"))
    op.drop_table("meeting_connections")
    op.drop_table("meeting_messages")
    with op.batch_alter_table("meeting_participants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_meeting_participants_user_id"))
    op.drop_table("meeting_participants")
    with op.batch_alter_table("meetings", schema=None) as batch_op:
        batch_op.drop_index("ix_meetings_case_id_starts_at")
    op.drop_table("meetings")
