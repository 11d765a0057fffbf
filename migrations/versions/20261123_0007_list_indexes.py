"""Staff list indexes that answer every list filter from the index alone.

The three ordered list indexes gain the columns the other filters test (triage, the firm's
answer and its deadline, category and status by amount) and, on PostgreSQL, ``INCLUDE (id)``:
an index-only scan then checks the filters on index entries and never visits the table, where
a plain index scan fetched every case it looked at (the "overdue" list walked 15,000 of them
to fill a page). SQLite's indexes always hold the rowid.

Revision ID: 7a2b3c4d5e6f
Revises: 6f1d2e3c4b5a
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "7a2b3c4d5e6f"
down_revision = "6f1d2e3c4b5a"
branch_labels = None
depends_on = None

NEW = {
    "ix_cases_committee_status_submitted": [
        "committee_id",
        "status",
        "submitted_at",
        "category",
        "complexity",
    ],
    "ix_cases_committee_submitted": [
        "committee_id",
        "submitted_at",
        "status",
        "category",
        "close_due",
        "firm_response",
        "firm_response_due",
        "complexity",
    ],
    "ix_cases_committee_amount": ["committee_id", "amount_fen", "category", "status"],
}
OLD = {
    "ix_cases_committee_status_submitted": ["committee_id", "status", "submitted_at", "category"],
    "ix_cases_committee_submitted": [
        "committee_id",
        "submitted_at",
        "status",
        "category",
        "close_due",
    ],
    "ix_cases_committee_amount": ["committee_id", "amount_fen"],
}


def _replace(indexes: dict[str, list[str]], include: list[str]) -> None:
    for name, columns in indexes.items():
        op.drop_index(name, table_name="cases")
        op.create_index(name, "cases", columns, postgresql_include=include)


def upgrade() -> None:
    _replace(NEW, ["id"])


def downgrade() -> None:
    _replace(OLD, [])
