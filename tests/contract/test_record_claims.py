"""audit-ingest's record claims (lookups.claim), on each backend: the first position of a
content claims it, the same position read again is that delivery retried, any other
position a duplicate; conflicts are judged in batch order; two writers of one content at
once leave it one owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elevate_audit_ingest.domain import TrailRecord, parse_record
from elevate_audit_ingest.lookups import Claims, Received, claim
from elevate_audit_ingest.main import SPEC
from elevate_core.db import Database
from elevate_local.simulate_activity import call_record

from tests.harness import database

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def audit_db(database_url: str) -> AsyncIterator[Database]:
    async with database(database_url, SPEC.migrations) as db:
        yield db


def record(n: int, *, event_id: str | None = None) -> TrailRecord:
    data: dict[str, Any] = call_record(
        user="alice",
        account_id="210987654321",
        permission_set="AdministratorAccess",
        at=NOW - timedelta(minutes=5),
        event_source="s3.amazonaws.com",
        event_name="GetObject",
        request_parameters={"key": f"k{n}"},
    )
    if event_id is not None:
        data["eventID"] = event_id  # another content under that eventID
    return parse_record(data)


async def claimed(db: Database, *batch: tuple[TrailRecord, str]) -> tuple[set[str], Claims]:
    received = [Received(r, position) for r, position in batch]
    async with db.transaction() as session:
        claims = await claim(session, received, NOW)
    return {r.position for r in received if claims.is_ours(r)}, claims


async def test_the_first_position_claims_a_content_and_a_retry_there_is_its_own(
    audit_db: Database,
) -> None:
    a, b = record(1), record(2)
    ours, _ = await claimed(audit_db, (a, "t:0:1"), (a, "t:0:2"), (b, "t:0:3"))
    assert ours == {"t:0:1", "t:0:3"}  # the copy at offset 2 is a duplicate
    ours, _ = await claimed(audit_db, (a, "t:0:1"), (b, "t:1:7"))
    assert ours == {"t:0:1"}  # read again where it was claimed: retried, emitted again
    ours, _ = await claimed(audit_db, (a, "t:0:9"))
    assert ours == set()


async def test_conflicts_are_what_was_known_before_each_record(audit_db: Database) -> None:
    first = record(1)
    second = record(2, event_id=first.event_id)
    _, claims = await claimed(audit_db, (first, "t:0:1"), (second, "t:0:2"))
    assert claims.conflicts(first, "t:0:1") == []  # the later record was not known yet
    assert [c.digest for c in claims.conflicts(second, "t:0:2")] == [first.digest]
    third = record(3, event_id=first.event_id)
    _, claims = await claimed(audit_db, (third, "t:0:3"))
    assert {c.digest for c in claims.conflicts(third, "t:0:3")} == {first.digest, second.digest}


async def test_two_writers_of_one_content_at_once_leave_it_one_owner(audit_db: Database) -> None:
    """Interleaved: A claims and holds its transaction open; B claims the same content at
    another position meanwhile (blocked by A's row on PostgreSQL, by the write lock on
    SQLite); A commits; B's claim then finds the content A's."""
    a = record(1)
    async with audit_db.transaction() as first:
        mine = await claim(first, [Received(a, "t:0:1")], NOW)
        other = asyncio.create_task(claimed(audit_db, (a, "t:5:1")))
        await asyncio.sleep(0.2)  # B is now waiting on A (it cannot finish before A)
        assert not other.done()
    assert mine.is_ours(Received(a, "t:0:1"))
    ours, _ = await other
    assert ours == set()
