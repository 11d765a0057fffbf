"""Search and list indexes that hold at 100,000 cases.

- The staff list orders by submission time within a committee (and status): composite indexes
  let both databases read the index in order and stop after one page, instead of sorting every
  case of the committee; their trailing columns answer the usual filters (category, deadline)
  from the index alone. ``ix_cases_committee_status`` is a prefix of the new one and goes.
- SQLite: the trigram FTS5 table gains the case number, so a number search uses it too; a second
  FTS5 table holds each case's character pairs for two-character queries (see portal.search).
  Its triggers call ``jiefen_bigrams``, which portal.db registers on every SQLite connection.
- PostgreSQL: ``jiefen_bigrams(text)``, an immutable function that computes the same pairs,
  fills the generated column ``search_bigrams`` (not in the models: only PostgreSQL has it),
  which a GIN index serves; queries test ``search_bigrams @> ARRAY[pair]``.

Revision ID: 5e4c0a1b2d3f
Revises: 4ded1cd5f737
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "5e4c0a1b2d3f"
down_revision = "4ded1cd5f737"
branch_labels = None
depends_on = None

# A copy of portal.search.SEPARATORS as a regular-expression class for PostgreSQL (a migration
# must not change when the application's code does).
PG_SEPARATORS = r"[\s,.;:!?，。；：！？、“”‘’（）()《》【】\"''-]"
SEARCH_TEXT = "coalesce(number, '') || ' ' || coalesce(respondent_name, '') || ' ' || facts"

OLD_FTS_TRIGGERS = ("cases_fts_insert", "cases_fts_delete", "cases_fts_update")
NEW_TRIGGERS = ("cases_search_insert", "cases_search_delete", "cases_search_update")
COLUMNS = "number, respondent_name, facts"
NEW = "new.number, new.respondent_name, new.facts"
OLD = "old.number, old.respondent_name, old.facts"
SQLITE_BIGRAMS = "jiefen_bigrams(coalesce({p}.number, '') || ' ' || coalesce({p}.respondent_name, '') || ' ' || {p}.facts)"

SQLITE_UP = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in OLD_FTS_TRIGGERS),
    "DROP TABLE IF EXISTS cases_fts",
    f"CREATE VIRTUAL TABLE cases_fts USING fts5({COLUMNS}, content='cases', "
    "content_rowid='id', tokenize='trigram')",
    "INSERT INTO cases_fts(cases_fts) VALUES ('rebuild')",
    "CREATE VIRTUAL TABLE cases_bigrams USING fts5(grams, tokenize='unicode61 remove_diacritics 0')",
    f"INSERT INTO cases_bigrams(rowid, grams) SELECT id, {SQLITE_BIGRAMS.format(p='cases')} FROM cases",
    "CREATE TRIGGER cases_search_insert AFTER INSERT ON cases BEGIN "
    f"INSERT INTO cases_fts(rowid, {COLUMNS}) VALUES (new.id, {NEW}); "
    f"INSERT INTO cases_bigrams(rowid, grams) VALUES (new.id, {SQLITE_BIGRAMS.format(p='new')}); "
    "END",
    "CREATE TRIGGER cases_search_delete AFTER DELETE ON cases BEGIN "
    f"INSERT INTO cases_fts(cases_fts, rowid, {COLUMNS}) VALUES ('delete', old.id, {OLD}); "
    "DELETE FROM cases_bigrams WHERE rowid = old.id; "
    "END",
    f"CREATE TRIGGER cases_search_update AFTER UPDATE OF {COLUMNS} ON cases BEGIN "
    f"INSERT INTO cases_fts(cases_fts, rowid, {COLUMNS}) VALUES ('delete', old.id, {OLD}); "
    f"INSERT INTO cases_fts(rowid, {COLUMNS}) VALUES (new.id, {NEW}); "
    "DELETE FROM cases_bigrams WHERE rowid = old.id; "
    f"INSERT INTO cases_bigrams(rowid, grams) VALUES (new.id, {SQLITE_BIGRAMS.format(p='new')}); "
    "END",
]
SQLITE_DOWN = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in NEW_TRIGGERS),
    "DROP TABLE IF EXISTS cases_bigrams",
    "DROP TABLE IF EXISTS cases_fts",
    # As revision 4ded1cd5f737 made them.
    "CREATE VIRTUAL TABLE cases_fts USING fts5(facts, respondent_name, content='cases', "
    "content_rowid='id', tokenize='trigram')",
    "INSERT INTO cases_fts(cases_fts) VALUES ('rebuild')",
    "CREATE TRIGGER cases_fts_insert AFTER INSERT ON cases BEGIN "
    "INSERT INTO cases_fts(rowid, facts, respondent_name) "
    "VALUES (new.id, new.facts, new.respondent_name); END",
    "CREATE TRIGGER cases_fts_delete AFTER DELETE ON cases BEGIN "
    "INSERT INTO cases_fts(cases_fts, rowid, facts, respondent_name) "
    "VALUES ('delete', old.id, old.facts, old.respondent_name); END",
    "CREATE TRIGGER cases_fts_update AFTER UPDATE OF facts, respondent_name ON cases BEGIN "
    "INSERT INTO cases_fts(cases_fts, rowid, facts, respondent_name) "
    "VALUES ('delete', old.id, old.facts, old.respondent_name); "
    "INSERT INTO cases_fts(rowid, facts, respondent_name) "
    "VALUES (new.id, new.facts, new.respondent_name); END",
]
PG_UP = [
    # PL/pgSQL rather than SQL: it runs once per row written, and is never inlined into queries.
    "CREATE FUNCTION jiefen_bigrams(t text) RETURNS text[] LANGUAGE plpgsql IMMUTABLE STRICT "
    "PARALLEL SAFE AS $$ DECLARE c text[]; r text[] := '{}'; p text; BEGIN "
    f"c := regexp_split_to_array(regexp_replace(lower(t), '{PG_SEPARATORS}', ' ', 'g'), ''); "
    "FOR i IN 1 .. coalesce(array_length(c, 1), 0) - 1 LOOP "
    "p := c[i] || c[i + 1]; IF position(' ' in p) = 0 THEN r := r || p; END IF; END LOOP; "
    "RETURN ARRAY(SELECT DISTINCT x FROM unnest(r) AS x ORDER BY x); END $$",
    "ALTER TABLE cases ADD COLUMN search_bigrams text[] "
    f"GENERATED ALWAYS AS (jiefen_bigrams({SEARCH_TEXT})) STORED",
    "CREATE INDEX ix_cases_search_bigrams ON cases USING gin (search_bigrams)",
]
PG_DOWN = [
    "DROP INDEX IF EXISTS ix_cases_search_bigrams",
    "ALTER TABLE cases DROP COLUMN IF EXISTS search_bigrams",
    "DROP FUNCTION IF EXISTS jiefen_bigrams(text)",
]


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_committee_status")
        batch_op.create_index(
            "ix_cases_committee_status_submitted",
            ["committee_id", "status", "submitted_at", "category"],
            unique=False,
        )
        batch_op.create_index(
            "ix_cases_committee_submitted",
            ["committee_id", "submitted_at", "status", "category", "close_due"],
            unique=False,
        )
        batch_op.create_index(
            "ix_cases_committee_amount", ["committee_id", "amount_fen"], unique=False
        )
        batch_op.create_index("ix_cases_submitted_at", ["submitted_at"], unique=False)
    statements = SQLITE_UP if op.get_bind().dialect.name == "sqlite" else PG_UP
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else PG_DOWN
    for statement in statements:
        op.execute(statement)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_submitted_at")
        batch_op.drop_index("ix_cases_committee_amount")
        batch_op.drop_index("ix_cases_committee_submitted")
        batch_op.drop_index("ix_cases_committee_status_submitted")
        batch_op.create_index("ix_cases_committee_status", ["committee_id", "status"], unique=False)
