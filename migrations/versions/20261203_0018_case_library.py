"""oversight: the anonymised case library (类案检索)

``library_entries``: one anonymised entry per closed case (see portal.analytics.library_models).
Its ``search_text`` gets the same substring indexes as the cases (migration 0005,
portal.search), so that a Chinese phrase is found without a word segmenter:

- SQLite: an FTS5 trigram table over it (external content, kept in step by triggers) for three
  characters or more, and an FTS5 table of its character pairs (``jiefen_bigrams``, which
  portal.db registers on every connection) for two. They are named under the ``cases_fts`` and
  ``cases_bigrams`` prefixes that ``portal.db.include_in_autogenerate`` already leaves out of
  model comparisons (they index the anonymised text of closed cases); entries are written once
  and never change, so the update trigger is there only for safety.
- PostgreSQL: a pg_trgm GIN index on it, and a generated column of its character pairs
  (``jiefen_bigrams(text)`` from migration 0005) with a GIN index.

Revision ID: d8e9f0a1b2c3
Revises: c7d8e9f0a1b2
Create Date: 2026-12-03 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.db

revision: str = "d8e9f0a1b2c3"
down_revision: str | None = "c7d8e9f0a1b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = ("library_search_insert", "library_search_delete", "library_search_update")
SQLITE_UP = [
    # case_sensitive 1: the text and the queries are lower-cased by the application, so the
    # table matches exactly what PostgreSQL's LIKE does on the same text.
    "CREATE VIRTUAL TABLE cases_fts_library USING fts5(search_text, content='library_entries', "
    "content_rowid='id', tokenize='trigram case_sensitive 1')",
    "CREATE VIRTUAL TABLE cases_bigrams_library USING fts5(grams, "
    "tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER library_search_insert AFTER INSERT ON library_entries BEGIN "
    "INSERT INTO cases_fts_library(rowid, search_text) VALUES (new.id, new.search_text); "
    "INSERT INTO cases_bigrams_library(rowid, grams) "
    "VALUES (new.id, jiefen_bigrams(new.search_text)); "
    "END",
    "CREATE TRIGGER library_search_delete AFTER DELETE ON library_entries BEGIN "
    "INSERT INTO cases_fts_library(cases_fts_library, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "DELETE FROM cases_bigrams_library WHERE rowid = old.id; "
    "END",
    "CREATE TRIGGER library_search_update AFTER UPDATE OF search_text ON library_entries BEGIN "
    "INSERT INTO cases_fts_library(cases_fts_library, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO cases_fts_library(rowid, search_text) VALUES (new.id, new.search_text); "
    "DELETE FROM cases_bigrams_library WHERE rowid = old.id; "
    "INSERT INTO cases_bigrams_library(rowid, grams) "
    "VALUES (new.id, jiefen_bigrams(new.search_text)); "
    "END",
]
SQLITE_DOWN = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS),
    "DROP TABLE IF EXISTS cases_bigrams_library",
    "DROP TABLE IF EXISTS cases_fts_library",
]
PG_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_library_entries_search_trgm ON library_entries "
    "USING gin (search_text gin_trgm_ops)",
    "ALTER TABLE library_entries ADD COLUMN search_bigrams text[] "
    "GENERATED ALWAYS AS (jiefen_bigrams(search_text)) STORED",
    "CREATE INDEX ix_library_entries_search_bigrams ON library_entries USING gin (search_bigrams)",
]
PG_DOWN = [
    "DROP INDEX IF EXISTS ix_library_entries_search_bigrams",
    "ALTER TABLE library_entries DROP COLUMN IF EXISTS search_bigrams",
    "DROP INDEX IF EXISTS ix_library_entries_search_trgm",
]


def upgrade() -> None:
    op.create_table(
        "library_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=30), nullable=False),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.Column("respondent_name", sa.String(length=120), nullable=False),
        sa.Column("facts", sa.Text(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("claimed_fen", sa.BigInteger(), nullable=True),
        sa.Column("agreed_fen", sa.BigInteger(), nullable=True),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("working_days", sa.Integer(), nullable=True),
        sa.Column("closed_month", sa.Date(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('fulfilled', 'failed', 'transferred', 'withdrawn')",
            name=op.f("ck_library_entries_outcome_known"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_library_entries_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["committee_id"],
            ["committees.id"],
            name=op.f("fk_library_entries_committee_id_committees"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_library_entries")),
        sa.UniqueConstraint("case_id", name=op.f("uq_library_entries_case_id")),
    )
    with op.batch_alter_table("library_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_library_entries_category_outcome", ["category", "outcome"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_library_entries_committee_id"), ["committee_id"], unique=False
        )
    statements = SQLITE_UP if op.get_bind().dialect.name == "sqlite" else PG_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else PG_DOWN
    for statement in statements:
        op.execute(statement)
    with op.batch_alter_table("library_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_library_entries_committee_id"))
        batch_op.drop_index("ix_library_entries_category_outcome")
    op.drop_table("library_entries")
