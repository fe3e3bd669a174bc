"""Async SQLAlchemy for both backends: PostgreSQL (production, many replicas) and
SQLite (the embedded single-replica default).

Every service owns one database. Shared runtime tables (outbox, processed events,
timers) live on `Base.metadata` beside the service's own tables, so one Alembic chain
per service creates them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, TypeDecorator, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session

from elevate_core.errors import DatabaseUnavailableError

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


CommitHook = Callable[[Session], None]
_commit_hooks: list[CommitHook] = []


def on_commit(hook: CommitHook) -> None:
    """Run `hook(session)` after every commit (used to wake relays and timer loops at
    once instead of polling). Hooks look at `session.info` to see what was written."""
    _commit_hooks.append(hook)


@event.listens_for(Session, "after_commit")
def _run_commit_hooks(session: Session) -> None:
    for hook in list(_commit_hooks):
        hook(session)
    session.info.clear()


class Database:
    """One engine and session factory for one service's database."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 10,
        sqlite_busy_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            # A few pooled connections: opening one (and its PRAGMAs) per transaction cost
            # more than the work; BEGIN IMMEDIATE still serialises the writers.
            kwargs.update(
                pool_size=3, max_overflow=5, connect_args={"timeout": sqlite_busy_timeout}
            )
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            busy_ms = int(sqlite_busy_timeout * 1000)
            event.listen(
                self.engine.sync_engine,
                "connect",
                lambda conn, _rec: _sqlite_pragmas(conn, busy_ms),
            )
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        The connection is taken at once, so a database that cannot be reached shows as
        `DatabaseUnavailableError` (transient) before any work starts — drivers report it
        as a bare `OSError`/`TimeoutError`, which the retry policy does not trust."""
        async with self.sessions() as session, session.begin():
            try:
                await session.connection()
            except (OSError, TimeoutError) as exc:
                raise DatabaseUnavailableError(f"database unavailable: {exc!r}") from exc
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def create_all(self) -> None:
        """Create every table on Base.metadata (tests and the embedded default)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, busy_ms: int) -> None:
    # pysqlite begins lazily and only before writes; turn that off so `begin` below
    # decides, as SQLAlchemy's SQLite docs recommend.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a read-then-write transaction can then never fail
    # with SQLITE_BUSY halfway (the single-replica default serialises writers anyway).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def insert_for(session: AsyncSession, table: Any) -> Any:
    """`INSERT` for this session's backend, so callers can add `.on_conflict_do_nothing()`
    (both PostgreSQL's and SQLite's dialects have it; the generic insert does not)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def utcnow() -> datetime:
    return datetime.now(UTC)
