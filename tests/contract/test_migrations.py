"""The Alembic chain creates exactly what the models declare, on both backends."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from elevate_core.db import Base, Database
from elevate_core.migrate import upgrade
from sqlalchemy import Connection, inspect

RUNTIME_TABLES = {"outbox", "processed_events", "timers", "dlq_redriven", "leases"}


async def test_runtime_migrations_match_models(database_url: str) -> None:
    db = Database(database_url)
    await upgrade(db)
    await upgrade(db)  # idempotent: a restart re-runs it

    def diff(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda obj, name, kind, *_: (
                    kind != "table" or name in RUNTIME_TABLES
                ),
            },
        )
        return list(compare_metadata(ctx, Base.metadata))

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    async with db.engine.connect() as conn:
        assert await conn.run_sync(tables) >= RUNTIME_TABLES
        assert await conn.run_sync(diff) == []
    await db.dispose()
