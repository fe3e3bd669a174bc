"""Upgrading a database that holds rows, on both backends: request-api's 0003 adds the
approvers' ids to a `requests` table that timeline rows point at (a table rebuild on SQLite
would be refused by those foreign keys; `make dev` keeps its SQLite files between runs)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command
from elevate_core.db import Database
from elevate_core.migrate import alembic_config, upgrade
from elevate_request_api.main import SPEC as REQUEST_API
from sqlalchemy import Connection

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _filler(column: sa.Column[Any]) -> object:
    """A value of the column's type, for the columns a row must have."""
    kind = column.type
    if isinstance(kind, sa.JSON):
        return []
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.Integer):
        return 0
    if isinstance(kind, sa.Uuid):
        return uuid.uuid4().hex
    if isinstance(kind, sa.DateTime | sa.TypeDecorator):
        return NOW
    return "x"


def _insert_filled(connection: Connection, table: str, **given: object) -> None:
    reflected = sa.Table(table, sa.MetaData(), autoload_with=connection)
    row = {
        c.name: _filler(c)
        for c in reflected.columns
        if not c.nullable and c.autoincrement is not True and c.name not in given
    }
    connection.execute(reflected.insert().values(**(row | given)))


async def test_request_api_0003_upgrades_a_database_with_requests(database_url: str) -> None:
    db = Database(database_url)
    config = alembic_config(REQUEST_API.migrations)
    request_id = uuid.uuid4().hex  # as the Uuid type stores it on SQLite; PostgreSQL parses it

    def to_0002_with_rows(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "request_api_0002")
        _insert_filled(connection, "requests", id=request_id)
        _insert_filled(connection, "request_timeline", request_id=request_id)

    async with db.engine.begin() as conn:
        await conn.run_sync(to_0002_with_rows)
    await upgrade(db, REQUEST_API.migrations)  # what a service does at start
    async with db.engine.begin() as conn:
        ids = (await conn.execute(sa.text("SELECT approver_ids FROM requests"))).scalars().all()
        timeline = (await conn.execute(sa.text("SELECT count(*) FROM request_timeline"))).scalar()
    await db.dispose()
    assert [i if isinstance(i, list) else json.loads(i) for i in ids] == [[]]
    assert timeline == 1
