"""Database: the declarative Base, a UTC datetime type, the engine and session factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from portal.search import bigrams

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text. Either way Python sees an
    aware datetime in UTC, and naive datetimes are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit is on disk when it returns (NORMAL in WAL mode may lose the last commits
    # on power loss), which the evidence log promises for every receipt it hands out.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
    # The search triggers on `cases` call it (see portal.search).
    dbapi_connection.create_function("jiefen_bigrams", 1, bigrams, deterministic=True)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL mode, foreign keys and a busy timeout.

    Statement parameters are kept out of error messages (``hide_parameters``): a failed
    statement's values may be a person's name or a search for one, and errors are logged."""
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip on every checkout (0.4 ms of CPU per chat message,
    # bench/sessions.py). A connection found dead fails its one statement; SQLAlchemy then
    # invalidates the pool, and callers retry (chat clients resend with the same message id).
    kwargs.setdefault("pool_pre_ping", False)
    kwargs.setdefault("pool_recycle", 1800)
    if url.startswith("postgresql+asyncpg"):
        # asyncpg waits 60 s for a connection by default; a database that does not answer
        # should turn into a clear "try again" page well before a browser gives up.
        kwargs["connect_args"] = {"timeout": 10, **kwargs.get("connect_args", {})}
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
    return create_async_engine(url, **kwargs)


_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk I/O")


_DRIVERS = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")


def _raised_in_driver(exc: BaseException) -> bool:
    """Whether the database layer is on ``exc``'s traceback (a refused connection to
    PostgreSQL, not one to Redis, a webhook receiver or the time-stamping authority)."""
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in _DRIVERS:
            return True
        tb = tb.tb_next
    return False


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached or is briefly refusing work.

    A stopped or restarting PostgreSQL (connection refused, reset, "shutting down"), a pool
    that timed out, a connection found dead, or SQLite's "database is locked": the request can
    be tried again later, so the portal answers 503 with Retry-After rather than 500. Follows
    the exception's causes, since SQLAlchemy and rollbacks wrap the driver's error; a plain
    connection error or timeout counts only when raised inside the database layer.
    """
    import sqlalchemy.exc as sa_exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError):
            orig = current.orig
            if type(orig).__module__ != "sqlite3":
                return True
            # SQLite says OperationalError for a missing table too, which no retry mends.
            return any(word in str(orig) for word in _SQLITE_TRANSIENT)
        if isinstance(current, sa_exc.TimeoutError):  # the pool had no connection to give
            return True
        if isinstance(current, ConnectionError | TimeoutError) and _raised_in_driver(current):
            return True
        if type(current).__module__.startswith("asyncpg") and type(current).__name__ in {
            "CannotConnectNowError",
            "ConnectionDoesNotExistError",
            "ConnectionFailureError",
            "AdminShutdownError",
            "CrashShutdownError",
            "InterfaceError",
        }:
            return True
        current = current.__cause__ or current.__context__
    return False


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session that rolls back whatever its user did not commit."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise


def import_models() -> None:
    """Import every feature's models so that Base.metadata is complete (Alembic, tests)."""
    from portal.accounts import models as _accounts  # noqa: F401
    from portal.agreements import models as _agreements  # noqa: F401
    from portal.analytics import library_models as _library  # noqa: F401
    from portal.analytics import likeness_models as _likeness  # noqa: F401
    from portal.analytics import models as _analytics  # noqa: F401
    from portal.analytics import rollup_models as _rollup  # noqa: F401
    from portal.api import models as _api  # noqa: F401
    from portal.audit import models as _audit  # noqa: F401
    from portal.cases import models as _cases  # noqa: F401
    from portal.evidence import models as _evidence  # noqa: F401
    from portal.meetings import minutes_models as _minutes  # noqa: F401
    from portal.meetings import models as _meetings  # noqa: F401
    from portal.meetings import recording_models as _recordings  # noqa: F401
    from portal.notify import models as _notify  # noqa: F401
    from portal.orgs import models as _orgs  # noqa: F401
    from portal.workdays import models as _workdays  # noqa: F401


# Search structures the migrations create by hand, per dialect: not in the models.
UNMODELLED_PREFIXES = ("cases_fts", "cases_bigrams")
UNMODELLED_SUFFIXES = ("_trgm", "_bigrams")


def include_in_autogenerate(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic filter: leave the hand-made search tables and indexes out of comparisons."""
    return not (
        name and (name.startswith(UNMODELLED_PREFIXES) or name.endswith(UNMODELLED_SUFFIXES))
    )
