"""`elevate migrate --service NAME`: the Helm chart's pre-install/pre-upgrade hook brings a
service's PostgreSQL database to the schema the service itself would create at start, with
nothing but the database settings, and says clearly when it cannot."""

from __future__ import annotations

import asyncio
import io

import pytest
from alembic.script import ScriptDirectory
from elevate_core.cli import main
from elevate_core.migrate import alembic_config
from elevate_grant_worker.main import SPEC
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def _migrate(monkeypatch: pytest.MonkeyPatch, url: str, service: str) -> tuple[int, str]:
    monkeypatch.setenv("ELEVATE_MODE", "prod")
    monkeypatch.setenv("ELEVATE_DATABASE_URL", url)
    out, err = io.StringIO(), io.StringIO()
    code = main(["migrate", "--service", service], out=out, err=err)
    return code, out.getvalue() + err.getvalue()


async def _versions_and_tables(url: str) -> tuple[set[str], set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            versions = {
                r[0] for r in await conn.execute(text("SELECT version_num FROM alembic_version"))
            }
            tables = {
                r[0]
                for r in await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            }
    finally:
        await engine.dispose()
    return versions, tables


def test_migrate_brings_a_service_database_to_its_heads_once(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    code, said = _migrate(monkeypatch, pg_url, "grant-worker")
    assert (code, said.strip()) == (0, "grant-worker: database schema up to date")
    heads = set(ScriptDirectory.from_config(alembic_config(SPEC.migrations)).get_heads())
    versions, tables = asyncio.run(_versions_and_tables(pg_url))
    assert versions == heads
    assert {
        "outbox",
        "timers",
        "leases",
        "gw_grants",
        "gw_assignments",
    } <= tables  # the runtime's and its own

    code, said = _migrate(monkeypatch, pg_url, "grant-worker")  # an upgrade with nothing to do
    assert code == 0, said
    assert asyncio.run(_versions_and_tables(pg_url)) == (versions, tables)


def test_migrate_refuses_sqlite_in_prod_and_names_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    code, said = _migrate(monkeypatch, "sqlite+aiosqlite:///x.db", "approval")
    assert code == 2
    assert "ELEVATE_DATABASE_URL: SQLite is refused in prod mode" in said

    code, said = _migrate(
        monkeypatch, "postgresql+asyncpg://elevate:pw@127.0.0.1:9/approval", "approval"
    )
    assert code == 1
    assert said.startswith("elevate: migrating approval failed:")
    assert "pw@" not in said  # the password is not printed
