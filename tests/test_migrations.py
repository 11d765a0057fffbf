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
