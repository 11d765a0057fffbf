"""oversight: how each case ended (outcome, working days, amounts agreed and waived) with the
statistics index, and risk notices to firms

Revision ID: b6c7d8e9f0a1
Revises: a5b6c7d8e9f0
Create Date: 2026-12-03 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "b6c7d8e9f0a1"
down_revision: str | None = "a5b6c7d8e9f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES = ("settled", "failed", "withdrawn", "rejected", "ineligible")
STATS_COLUMNS = [
    "submitted_at",
    "committee_id",
    "category",
    "respondent_firm_id",
    "mediator_id",
    "outcome",
    "handling_days",
    "accepted_at",
    "firm_response",
    "amount_fen",
    "agreed_fen",
    "waived_fen",
]


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=12), nullable=True))
        batch_op.add_column(
            sa.Column("outcome_at", portal.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("handling_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("agreed_fen", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("waived_fen", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_cases_stats", STATS_COLUMNS, unique=False)

    op.create_table(
        "risk_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("firm_id", sa.Integer(), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=True),
        sa.Column("sent_by_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=30), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by_id", sa.Integer(), nullable=True),
        sa.Column("acknowledged_at", portal.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["acknowledged_by_id"],
            ["users.id"],
            name=op.f("fk_risk_notices_acknowledged_by_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["committee_id"],
            ["committees.id"],
            name=op.f("fk_risk_notices_committee_id_committees"),
        ),
        sa.ForeignKeyConstraint(
            ["firm_id"], ["firms.id"], name=op.f("fk_risk_notices_firm_id_firms")
        ),
        sa.ForeignKeyConstraint(
            ["sent_by_id"], ["users.id"], name=op.f("fk_risk_notices_sent_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_notices")),
    )
    with op.batch_alter_table("risk_notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_risk_notices_firm_id"), ["firm_id"], unique=False)

    _backfill()


def _backfill() -> None:
    """Cases that ended before this revision: their outcome from the timeline, their working
    days from the calendar, their amounts from the agreement that took effect."""
    from portal.workdays.service import WorkCalendar

    bind = op.get_bind()
    china = ZoneInfo("Asia/Shanghai")
    entered = {
        (row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day))): row.kind
        for row in bind.execute(sa.text("SELECT day, kind FROM calendar_days"))
    }
    calendar = WorkCalendar(entered)
    ended = bind.execute(
        sa.text(
            "SELECT c.id, c.accepted_at, c.submitted_at, c.paused_working_days, "
            "e.to_status, e.created_at FROM cases c JOIN case_events e ON e.id = ("
            "SELECT min(f.id) FROM case_events f WHERE f.case_id = c.id "
            "AND f.kind = 'transition' AND f.to_status IN "
            "('settled', 'failed', 'withdrawn', 'rejected', 'ineligible'))"
        )
    ).all()

    def local(moment: Any) -> date:
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(china).date()

    for row in ended:
        started = row.accepted_at or row.submitted_at
        days = None
        if started is not None:
            worked = calendar.working_days_between(local(started), local(row.created_at))
            days = max(0, worked - (row.paused_working_days or 0))
        bind.execute(
            sa.text(
                "UPDATE cases SET outcome = :outcome, outcome_at = :at, handling_days = :days "
                "WHERE id = :id"
            ),
            {"outcome": row.to_status, "at": row.created_at, "days": days, "id": row.id},
        )
    effective = bind.execute(
        sa.text(
            "SELECT a.case_id, v.terms FROM agreements a JOIN agreement_versions v "
            "ON v.agreement_id = a.id AND v.number = a.current_version "
            "WHERE a.status = 'effective'"
        )
    ).all()
    for case_id, terms in effective:
        if isinstance(terms, str):
            import json

            terms = json.loads(terms)
        agreed = int(terms.get("refund_fen", 0)) + int(terms.get("compensation_fen", 0))
        waived = int(terms.get("fee_waiver_fen", 0)) + int(terms.get("interest_waiver_fen", 0))
        bind.execute(
            sa.text("UPDATE cases SET agreed_fen = :agreed, waived_fen = :waived WHERE id = :id"),
            {"agreed": agreed, "waived": waived, "id": case_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("risk_notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_notices_firm_id"))
    op.drop_table("risk_notices")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_stats")
        batch_op.drop_column("waived_fen")
        batch_op.drop_column("agreed_fen")
        batch_op.drop_column("handling_days")
        batch_op.drop_column("outcome_at")
        batch_op.drop_column("outcome")
