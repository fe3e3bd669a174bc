"""Every Alembic chain creates exactly what the models declare, on both backends: the
shared runtime's own, and each service's (runtime + service versions) against the
runtime's models plus that service's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from elevate_approval.main import SPEC as APPROVAL
from elevate_audit_ingest.main import SPEC as AUDIT_INGEST
from elevate_core.db import Base, Database
from elevate_core.migrate import upgrade
from elevate_grant_worker.main import SPEC as GRANT_WORKER
from elevate_notifier.main import SPEC as NOTIFIER
from elevate_request_api.main import SPEC as REQUEST_API
from sqlalchemy import Connection, inspect

RUNTIME_MODULES = ("elevate_core.",)
RUNTIME_TABLES = {"outbox", "processed_events", "timers", "dlq_redriven", "leases"}

# (id, the service's versions folder, the package its models live in); None: runtime only.
CHAINS: list[Any] = [
    pytest.param(None, None, id="runtime"),
    pytest.param(REQUEST_API.migrations, "elevate_request_api.", id="request-api"),
    pytest.param(APPROVAL.migrations, "elevate_approval.", id="approval"),
    pytest.param(GRANT_WORKER.migrations, "elevate_grant_worker.", id="grant-worker"),
    pytest.param(AUDIT_INGEST.migrations, "elevate_audit_ingest.", id="audit-ingest"),
    pytest.param(NOTIFIER.migrations, "elevate_notifier.", id="notifier"),
]


def model_tables(*packages: str) -> set[str]:
    """The tables declared by models defined in `packages` (all share one Base)."""
    return {
        str(mapper.class_.__tablename__)
        for mapper in Base.registry.mappers
        if mapper.class_.__module__.startswith(packages)
    }


def test_the_runtime_models_are_the_runtime_tables() -> None:
    assert model_tables(*RUNTIME_MODULES) == RUNTIME_TABLES


@pytest.mark.parametrize(("versions", "package"), CHAINS)
async def test_migrations_match_models(
    database_url: str, versions: Path | None, package: str | None
) -> None:
    expected = model_tables(*RUNTIME_MODULES, *([package] if package else []))
    db = Database(database_url)
    await upgrade(db, versions)
    await upgrade(db, versions)  # idempotent: a restart re-runs it

    def diff(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": lambda obj, name, kind, *_: kind != "table" or name in expected,
            },
        )
        return list(compare_metadata(ctx, Base.metadata))

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names()) - {"alembic_version"}

    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(tables) == expected  # nothing missing, nothing extra
            assert await conn.run_sync(diff) == []
    finally:
        await db.dispose()
