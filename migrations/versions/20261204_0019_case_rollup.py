"""oversight: the dashboard's running totals (case_rollup), kept by triggers on cases

Every insert, delete, or change of a counted column of ``cases`` appends rows to
``case_rollup_delta`` in the same transaction: +1 for the case as it is now and -1 for it as it
was, once by category, once by firm, once by mediator (portal.analytics.rollup_models).
portal.analytics.rollup folds them into ``case_rollup``. Existing cases are added up here
into changes too (one per group of cases alike), which the portal folds when it starts.

The expressions below are the counts of portal.analytics.stats.Figures written in SQL that
SQLite and PostgreSQL both read; only the month (China time) differs. They are copied here,
not imported, so that this revision keeps meaning what it meant when it was written.

A later revision that rebuilds ``cases`` on SQLite (batch_alter_table with recreate) drops
these triggers and must create them again; tests/analytics/test_rollup.py checks they are
there at head.

Revision ID: e9f0a1b2c3d4
Revises: d8e9f0a1b2c3
Create Date: 2026-12-04 16:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e9f0a1b2c3d4"
down_revision: str | None = "d8e9f0a1b2c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ("kind", "month", "committee_id", "dim")
CHANGE = (*KEY, "hd")
FIGURES = (
    "received",
    "accepted",
    "settled",
    "failed",
    "withdrawn",
    "rejected",
    "claimed_fen",
    "agreed_fen",
    "waived_fen",
    "firm_asked",
    "firm_answered",
)
# Columns of cases whose change changes the totals.
WATCHED = (
    "submitted_at",
    "committee_id",
    "category",
    "respondent_firm_id",
    "mediator_id",
    "accepted_at",
    "outcome",
    "handling_days",
    "amount_fen",
    "agreed_fen",
    "waived_fen",
    "firm_response",
)
KINDS = (
    (1, "{r}.category"),
    (2, "coalesce(CAST({r}.respondent_firm_id AS TEXT), '')"),
    (3, "coalesce(CAST({r}.mediator_id AS TEXT), '')"),
)


def _month(dialect: str) -> str:
    if dialect == "postgresql":
        return "to_char(timezone('Asia/Shanghai', {r}.submitted_at), 'YYYY-MM')"
    # Stored as UTC text; China has kept UTC+8 without daylight saving since 1991.
    return "strftime('%Y-%m', {r}.submitted_at, '+8 hours')"


def _flag(condition: str) -> str:
    return f"(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _values(dialect: str, kind: int, dim: str, r: str, sign: str) -> list[str]:
    """The key and figures one case (row alias ``r``) adds, times ``sign``."""
    accepted = "{r}.accepted_at IS NOT NULL"
    asked = accepted + " AND {r}.respondent_firm_id IS NOT NULL"
    answered = asked + " AND {r}.firm_response IS NOT NULL"
    expressions = [
        str(kind),
        _month(dialect),
        "{r}.committee_id",
        dim,
        "(CASE WHEN {r}.outcome IN ('settled', 'failed') "
        "THEN coalesce({r}.handling_days, -1) ELSE -1 END)",
        f"{sign}",
        f"{sign} * " + _flag(accepted),
        f"{sign} * " + _flag("{r}.outcome = 'settled'"),
        f"{sign} * " + _flag("{r}.outcome = 'failed'"),
        f"{sign} * " + _flag("{r}.outcome = 'withdrawn'"),
        f"{sign} * " + _flag("{r}.outcome IN ('rejected', 'ineligible')"),
        f"{sign} * coalesce({{r}}.amount_fen, 0)",
        f"{sign} * coalesce({{r}}.agreed_fen, 0)",
        f"{sign} * coalesce({{r}}.waived_fen, 0)",
        f"{sign} * " + _flag(asked),
        f"{sign} * " + _flag(answered),
    ]
    return [e.format(r=r) for e in expressions]


COLUMNS = ", ".join(CHANGE + FIGURES)


def _append(dialect: str, r: str, sign: str) -> str:
    rows = ", ".join(
        "(" + ", ".join(_values(dialect, kind, dim.format(r=r), r, sign)) + ")"
        for kind, dim in KINDS
    )
    return f"INSERT INTO case_rollup_delta ({COLUMNS}) VALUES {rows};"


def _changed(r_old: str, r_new: str, distinct: str) -> str:
    return " OR ".join(f"{r_old}.{c} {distinct} {r_new}.{c}" for c in WATCHED)


def sqlite_up() -> list[str]:
    watched = ", ".join(WATCHED)
    changed = _changed("old", "new", "IS NOT")
    return [
        "CREATE TRIGGER case_rollup_insert AFTER INSERT ON cases "
        "WHEN new.submitted_at IS NOT NULL BEGIN " + _append("sqlite", "new", "1") + " END",
        "CREATE TRIGGER case_rollup_delete AFTER DELETE ON cases "
        "WHEN old.submitted_at IS NOT NULL BEGIN " + _append("sqlite", "old", "-1") + " END",
        f"CREATE TRIGGER case_rollup_update_old AFTER UPDATE OF {watched} ON cases "
        f"WHEN old.submitted_at IS NOT NULL AND ({changed}) BEGIN "
        + _append("sqlite", "old", "-1")
        + " END",
        f"CREATE TRIGGER case_rollup_update_new AFTER UPDATE OF {watched} ON cases "
        f"WHEN new.submitted_at IS NOT NULL AND ({changed}) BEGIN "
        + _append("sqlite", "new", "1")
        + " END",
    ]


SQLITE_TRIGGERS = (
    "case_rollup_insert",
    "case_rollup_delete",
    "case_rollup_update_old",
    "case_rollup_update_new",
)


def pg_up() -> list[str]:
    watched = ", ".join(WATCHED)
    changed = _changed("OLD", "NEW", "IS DISTINCT FROM")
    return [
        "CREATE FUNCTION case_rollup_note() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "  IF TG_OP <> 'INSERT' THEN\n"
        "    IF OLD.submitted_at IS NOT NULL THEN\n"
        f"      {_append('postgresql', 'OLD', '-1')}\n"
        "    END IF;\n"
        "  END IF;\n"
        "  IF TG_OP <> 'DELETE' THEN\n"
        "    IF NEW.submitted_at IS NOT NULL THEN\n"
        f"      {_append('postgresql', 'NEW', '1')}\n"
        "    END IF;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$$",
        "CREATE TRIGGER case_rollup_insert AFTER INSERT ON cases "
        "FOR EACH ROW EXECUTE FUNCTION case_rollup_note()",
        "CREATE TRIGGER case_rollup_delete AFTER DELETE ON cases "
        "FOR EACH ROW EXECUTE FUNCTION case_rollup_note()",
        f"CREATE TRIGGER case_rollup_update AFTER UPDATE OF {watched} ON cases "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION case_rollup_note()",
    ]


PG_DOWN = [
    "DROP TRIGGER IF EXISTS case_rollup_update ON cases",
    "DROP TRIGGER IF EXISTS case_rollup_delete ON cases",
    "DROP TRIGGER IF EXISTS case_rollup_insert ON cases",
    "DROP FUNCTION IF EXISTS case_rollup_note()",
]


def backfill(dialect: str) -> str:
    """The totals of every filed case, as changes still to fold."""
    parts = " UNION ALL ".join(
        "SELECT "
        + ", ".join(
            f"{e} AS {name}"
            for e, name in zip(
                _values(dialect, kind, dim.format(r="c"), "c", "1"), CHANGE + FIGURES, strict=True
            )
        )
        + " FROM cases AS c WHERE c.submitted_at IS NOT NULL"
        for kind, dim in KINDS
    )
    sums = ", ".join(f"sum({name})" for name in FIGURES)
    keys = ", ".join(CHANGE)
    return (
        f"INSERT INTO case_rollup_delta ({COLUMNS}) SELECT {keys}, {sums} "
        f"FROM ({parts}) AS u GROUP BY {keys}"
    )


def _figure_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    big = {"claimed_fen", "agreed_fen", "waived_fen"}
    return [
        sa.Column(name, sa.BigInteger() if name in big else sa.Integer(), nullable=False)
        for name in FIGURES
    ]


def upgrade() -> None:
    op.create_table(
        "case_rollup",
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("dim", sa.String(length=30), nullable=False),
        *_figure_columns(),
        sa.Column("days", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_case_rollup")),
    )
    op.create_table(
        "case_rollup_delta",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("committee_id", sa.Integer(), nullable=False),
        sa.Column("dim", sa.String(length=30), nullable=False),
        sa.Column("hd", sa.Integer(), nullable=False),
        *_figure_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_rollup_delta")),
    )
    dialect = op.get_bind().dialect.name
    for statement in sqlite_up() if dialect == "sqlite" else pg_up():
        op.execute(statement)
    op.execute(backfill(dialect))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for statement in PG_DOWN:
            op.execute(statement)
    op.drop_table("case_rollup_delta")
    op.drop_table("case_rollup")
