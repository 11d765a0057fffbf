"""Migrations: up, down and up again on both databases; models and migrations agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from portal.cli import alembic_config
from portal.db import Base, create_engine, include_in_autogenerate
from tests.conftest import (
    create_postgres_database,
    drop_postgres_database,
    make_settings,
    postgres_available,
    require_service,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/migrate.db"
        return
    if not postgres_available():
        require_service("PostgreSQL", "not listening")
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _inspect(url: str) -> tuple[set[str], list[object]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync,
                        opts={"compare_type": True, "include_object": include_in_autogenerate},
                    ),
                    Base.metadata,
                )
            )
    finally:
        await engine.dispose()
    return tables, diff


async def test_upgrade_downgrade_upgrade(empty_db: str, tmp_path: Path) -> None:
    import asyncio

    config = alembic_config(make_settings(empty_db, tmp_path))
    await asyncio.to_thread(command.upgrade, config, "heads")
    tables, diff = await _inspect(empty_db)
    assert {"users", "committees", "firms", "audit_events"} <= tables
    assert diff == [], f"models and migrations disagree: {diff}"
    await asyncio.to_thread(command.downgrade, config, "base")
    tables, _ = await _inspect(empty_db)
    assert tables <= {"alembic_version"}
    await asyncio.to_thread(command.upgrade, config, "heads")
    tables, diff = await _inspect(empty_db)
    assert "users" in tables and diff == []


async def test_last_login_starts_at_the_upgrade(empty_db: str, tmp_path: Path) -> None:
    """Migration d4e5f6a7b8c9: accounts that exist when it runs get the upgrade's time (their
    earlier logins were never recorded), so retention cannot erase them for it."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    config = alembic_config(make_settings(empty_db, tmp_path))
    await asyncio.to_thread(command.upgrade, config, "c3d4e5f6a7b8")
    engine = create_engine(empty_db)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (id, role, display_name, phone_index, password_hash, "
                    "locale, large_text, is_active, created_at, password_changed_at) VALUES "
                    "(7, 'consumer', '老用户', 'idx7', 'x', 'zh_CN', false, true, "
                    ":old, :old)"
                ),
                {"old": datetime(2020, 1, 1, tzinfo=UTC).replace(tzinfo=None)},
            )
        await asyncio.to_thread(command.upgrade, config, "heads")
        async with engine.connect() as conn:
            from portal.accounts.models import User

            user = (await conn.execute(User.__table__.select().where(User.id == 7))).one()
    finally:
        await engine.dispose()
    assert user.last_login_at is not None
    assert abs(datetime.now(UTC) - user.last_login_at) < timedelta(minutes=5)
