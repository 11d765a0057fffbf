"""retention: when each account last logged in (users.last_login_at)

Revision ID: d4e5f6a7b8c9
Revises: c3d4e5f6a7b8
Create Date: 2026-12-05 16:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4e5f6a7b8c9"
down_revision: str | None = "c3d4e5f6a7b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("last_login_at", sa.DateTime(timezone=True)))
    # Earlier logins were not recorded (sessions end at logout or expiry), so an account's
    # clock starts now: retention may never erase someone because of what was not recorded.
    op.execute(
        "UPDATE users SET last_login_at = COALESCE((SELECT max(s.created_at) FROM user_sessions s"
        " WHERE s.user_id = users.id), CURRENT_TIMESTAMP)"
    )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("last_login_at")
