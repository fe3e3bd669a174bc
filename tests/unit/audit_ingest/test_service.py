"""Grant index, waiting records and OCSF outbox rows, on SQLite with a manual clock."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from elevate_audit_ingest.domain import parse_record
from elevate_audit_ingest.grant_index import record_grant_event
from elevate_audit_ingest.lookups import Received
from elevate_audit_ingest.main import SPEC
from elevate_audit_ingest.models import PendingRecord, StandingRow
from elevate_audit_ingest.ocsf import validate_ocsf
from elevate_audit_ingest.service import (
    MAX_OUTPUT_BYTES,
    PENDING_TIMER,
    CorrelationConfig,
    OversizedRecordError,
    handle_batch,
    handle_record,
)
from elevate_audit_ingest.timers import pending_record_handler
from elevate_core.clock import ManualClock
from elevate_core.db import Base, Database
from elevate_core.events.base import Event
from elevate_core.events.models import (
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantScheduled,
    Person,
    RequestSnapshot,
    StandingAssignmentDropped,
    StandingAssignmentRecorded,
)
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.timers import Timer, TimerRunner
from elevate_local.simulate_activity import call_record
from sqlalchemy import Connection, func, select

ACCOUNT = "111122223333"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONFIG = CorrelationConfig(grace=timedelta(hours=1), wait=timedelta(minutes=10))
OUTBOX = Outbox(source="elevate/audit-ingest", topic_prefix="")
AUDIT_TABLES = {
    "audit_grants",
    "audit_standing",
    "audit_pending_records",
    "audit_quarantined_files",
    "audit_record_digests",
}


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    await upgrade(database, SPEC.migrations)
    yield database
    await database.dispose()


def snapshot(user: str = "alice", request_id: uuid.UUID | None = None) -> RequestSnapshot:
    return RequestSnapshot(
        request_id=request_id or uuid.uuid4(),
        requester=Person(user_name=user, user_id=f"uid-{user}", email=f"{user}@example.com"),
        account_id=ACCOUNT,
        account_name="payments-prod",
        permission_set_name="AdministratorAccess",
        permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-admin",
        start=T0,
        end=T0 + timedelta(hours=2),
        justification="INC-42",
        matched_rule="sre-prod",
        policy_version="v1",
        approvers=("bob",),
    )


def activity(
    user: str,
    at: datetime,
    permission_set: str = "AdministratorAccess",
    session_start: datetime | None = None,
) -> dict[str, Any]:
    return call_record(
        user=user,
        account_id=ACCOUNT,
        permission_set=permission_set,
        at=at,
        event_source="s3.amazonaws.com",
        event_name="ListBuckets",
        session_start=session_start,
    )


async def grant_event(db: Database, event: Event, now: datetime) -> None:
    async with db.transaction() as session:
        await record_grant_event(
            session, event=event, event_uid=str(uuid.uuid4()), outbox=OUTBOX, config=CONFIG, now=now
        )


async def record(db: Database, data: dict[str, Any], now: datetime) -> object:
    async with db.transaction() as session:
        return await handle_record(session, data=data, outbox=OUTBOX, config=CONFIG, now=now)


async def audit_rows(db: Database) -> list[tuple[str | None, dict[str, Any], dict[str, str]]]:
    async with db.sessions() as session:
        rows = (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
        return [(r.key, json.loads(r.value), dict(r.headers)) for r in rows]


async def test_migrations_match_models(db: Database) -> None:
    def diff(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda o, name, kind, *_: kind != "table" or name in AUDIT_TABLES
            },
        )
        return list(compare_metadata(ctx, Base.metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_grant_lifecycle_emits_user_access_and_correlates(db: Database) -> None:
    snap = snapshot()
    grant_id = uuid.uuid4()
    await grant_event(db, GrantActivated(grant_id=grant_id, snapshot=snap, activated_at=T0), T0)
    assert str(await record(db, activity("alice", T0 + timedelta(minutes=5)), T0)) == "grant"
    ended = T0 + timedelta(minutes=30)
    await grant_event(
        db,
        GrantEnded(
            grant_id=grant_id,
            snapshot=snap,
            reason="revoked",
            ended_at=ended,
            assignment_removed=True,
        ),
        ended,
    )
    # A session begun before the revocation, inside the grace; then outside it (it waits).
    late = activity("alice", ended + timedelta(minutes=59), session_start=ended)
    assert str(await record(db, late, ended)) == "grant"
    assert await record(db, activity("alice", ended + timedelta(minutes=61)), ended) is None

    rows = await audit_rows(db)
    assert [(d["class_uid"], d["activity_id"]) for _, d, _ in rows] == [
        (3005, 1),
        (6003, 2),
        (3005, 2),
        (6003, 2),
    ]
    assert all(key == str(snap.request_id) for key, _, _ in rows)
    assert all(h["elevate_request_id"] == str(snap.request_id) for _, _, h in rows)
    assert rows[2][1]["enrichments"][0]["data"]["reason"] == "revoked"
    for _, document, _ in rows:
        validate_ocsf(document)


async def test_record_waits_for_a_grant_that_arrives_later(db: Database) -> None:
    clock = ManualClock(T0 + timedelta(minutes=5))
    early = activity("alice", T0 + timedelta(minutes=1))
    assert await record(db, early, clock.now()) is None  # grant not known yet: waits
    assert await audit_rows(db) == []
    snap = snapshot()
    clock.advance(timedelta(minutes=2))
    await grant_event(
        db, GrantActivated(grant_id=uuid.uuid4(), snapshot=snap, activated_at=T0), clock.now()
    )
    rows = await audit_rows(db)
    assert [(d["class_uid"], d["metadata"].get("correlation_uid")) for _, d, _ in rows] == [
        (3005, str(snap.request_id)),
        (6003, str(snap.request_id)),
    ]
    async with db.sessions() as session:
        assert (
            await session.execute(select(func.count()).select_from(PendingRecord))
        ).scalar() == 0
        assert (await session.execute(select(func.count()).select_from(Timer))).scalar() == 0


async def test_uncovered_record_is_flagged_when_the_wait_is_over(db: Database) -> None:
    clock = ManualClock(T0)
    await grant_event(
        db, GrantActivated(grant_id=uuid.uuid4(), snapshot=snapshot(), activated_at=T0), T0
    )
    before = len(await audit_rows(db))
    assert await record(db, activity("mallory", T0 + timedelta(minutes=1)), clock.now()) is None
    runner = TimerRunner(
        db,
        {PENDING_TIMER: pending_record_handler(outbox=OUTBOX, config=CONFIG, clock=clock)},
        clock=clock,
    )
    clock.advance(timedelta(minutes=9))
    assert await runner.fire_due() == 0
    clock.advance(timedelta(minutes=1))
    assert await runner.fire_due() == 1
    rows = (await audit_rows(db))[before:]
    assert len(rows) == 1
    key, document, headers = rows[0]
    assert key == ACCOUNT
    assert document["severity_id"] == 4
    assert headers["elevate_outcome"] == "uncovered"


async def test_standing_assignment_covers_its_user(db: Database) -> None:
    await grant_event(
        db,
        StandingAssignmentRecorded(
            account_id=ACCOUNT,
            permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-ro",
            permission_set_name="ReadOnlyAccess",
            principal_id="uid-carol",
            user_name="carol",
            source="baseline",
        ),
        T0,
    )
    outcome = await record(db, activity("carol", T0 + timedelta(days=30), "ReadOnlyAccess"), T0)
    assert str(outcome) == "standing"
    (row,) = await audit_rows(db)
    assert row[1]["severity_id"] == 1
    assert row[0] == ACCOUNT


def ended(grant_id: uuid.UUID, snap: RequestSnapshot, at: datetime) -> GrantEnded:
    return GrantEnded(
        grant_id=grant_id, snapshot=snap, reason="expired", ended_at=at, assignment_removed=True
    )


async def test_redelivered_activation_and_end_emit_once(db: Database) -> None:
    snap, grant_id = snapshot(), uuid.uuid4()
    activated = GrantActivated(grant_id=grant_id, snapshot=snap, activated_at=T0)
    await grant_event(db, activated, T0)
    await grant_event(db, activated, T0)
    end = T0 + timedelta(hours=2)
    await grant_event(db, ended(grant_id, snap, end), end)
    await grant_event(db, ended(grant_id, snap, end), end)
    rows = await audit_rows(db)
    assert [(d["class_uid"], d["activity_id"]) for _, d, _ in rows] == [(3005, 1), (3005, 2)]


async def test_a_grant_that_never_activated_is_neither_assigned_nor_revoked(
    db: Database,
) -> None:
    snap, grant_id = snapshot(), uuid.uuid4()
    await grant_event(db, GrantScheduled(grant_id=grant_id, snapshot=snap, activates_at=T0), T0)
    await grant_event(db, GrantFailed(grant_id=grant_id, snapshot=snap, reason="boom"), T0)
    await grant_event(db, ended(grant_id, snap, T0), T0)
    assert await audit_rows(db) == []
    # scheduled but never active: it covers nothing, so the record waits
    assert await record(db, activity("alice", T0 + timedelta(minutes=1)), T0) is None


async def test_dropped_standing_assignment_no_longer_covers(db: Database) -> None:
    arn = "arn:aws:sso:::permissionSet/ssoins-1/ps-ro"
    common: dict[str, Any] = {
        "account_id": ACCOUNT,
        "permission_set_arn": arn,
        "permission_set_name": "ReadOnlyAccess",
        "principal_id": "uid-carol",
        "user_name": "carol",
        "source": "baseline",
    }
    await grant_event(db, StandingAssignmentRecorded(**common), T0)
    at = T0 + timedelta(days=1)
    assert str(await record(db, activity("carol", at, "ReadOnlyAccess"), T0)) == "standing"
    await grant_event(db, StandingAssignmentDropped(**common, reason="assignment_gone"), T0)
    assert await record(db, activity("carol", at, "ReadOnlyAccess"), T0) is None
    # dropping what is not (or no longer) recorded changes nothing
    await grant_event(db, StandingAssignmentDropped(**common, reason="assignment_gone"), T0)


async def test_group_standing_assignments_are_not_indexed(db: Database) -> None:
    # CloudTrail names the user, never the group: only user assignments can cover a record
    await grant_event(
        db,
        StandingAssignmentRecorded(
            account_id=ACCOUNT,
            permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-ro",
            permission_set_name="ReadOnlyAccess",
            principal_id="gid-sre",
            principal_type="GROUP",
            source="baseline",
        ),
        T0,
    )
    async with db.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(StandingRow))).scalar() == 0


async def test_unmanaged_records_are_not_emitted(db: Database) -> None:
    data = activity("alice", T0)
    data["userIdentity"] = {
        "type": "IAMUser",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/ci",
        "accountId": ACCOUNT,
    }
    assert str(await record(db, data, T0)) == "unmanaged"
    assert await audit_rows(db) == []


def timers(db: Database, clock: ManualClock) -> TimerRunner:
    handler = pending_record_handler(outbox=OUTBOX, config=CONFIG, clock=clock)
    return TimerRunner(db, {PENDING_TIMER: handler}, clock=clock)


async def test_a_session_begun_after_the_end_is_flagged_as_outlived(db: Database) -> None:
    snap = snapshot()
    grant_id = uuid.uuid4()
    await grant_event(db, GrantActivated(grant_id=grant_id, snapshot=snap, activated_at=T0), T0)
    ended = T0 + timedelta(hours=2)
    ended_event = GrantEnded(
        grant_id=grant_id, snapshot=snap, reason="expired", ended_at=ended, assignment_removed=True
    )
    await grant_event(db, ended_event, ended)
    before = len(await audit_rows(db))
    clock = ManualClock(ended + timedelta(minutes=10))
    # Inside the grace, but the session began after the end: it waits, then is flagged.
    late = activity("alice", clock.now(), session_start=ended + timedelta(minutes=9))
    assert await record(db, late, clock.now()) is None
    clock.advance(CONFIG.wait)
    assert await timers(db, clock).fire_due() == 1
    ((key, document, headers),) = (await audit_rows(db))[before:]
    assert key == str(snap.request_id)
    assert headers["elevate_outcome"] == "outlived-grant"
    assert headers["elevate_request_id"] == str(snap.request_id)
    assert document["severity_id"] == 4
    assert document["metadata"]["labels"] == ["elevate:outlived-grant"]
    outlived = document["enrichments"][1]
    assert outlived["data"]["reason"] == "session-began-after-end"
    assert outlived["data"]["window_end"] == ended.isoformat()


async def test_a_record_reusing_an_event_id_does_not_suppress_the_genuine(db: Database) -> None:
    snap = snapshot()
    await grant_event(db, GrantActivated(grant_id=uuid.uuid4(), snapshot=snap, activated_at=T0), T0)
    before = len(await audit_rows(db))
    genuine = activity("alice", T0 + timedelta(minutes=5))
    forged = {**genuine, "eventName": "ListAccessKeys", "sourceIPAddress": "198.51.100.66"}
    assert str(await record(db, genuine, T0 + timedelta(minutes=6))) == "grant"
    assert str(await record(db, forged, T0 + timedelta(minutes=7))) == "grant"
    (_, first, _), (_, second, _) = (await audit_rows(db))[before:]
    assert first["metadata"]["original_event_uid"] == second["metadata"]["original_event_uid"]
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert first["api"]["operation"] == "ListBuckets"
    assert second["api"]["operation"] == "ListAccessKeys"
    assert "elevate:event-id-conflict" not in first["metadata"]["labels"]
    assert "elevate:event-id-conflict" in second["metadata"]["labels"]
    assert second["severity_id"] == 4


async def test_records_sharing_an_event_id_wait_side_by_side(db: Database) -> None:
    clock = ManualClock(T0)
    genuine = activity("mallory", T0)
    forged = {**genuine, "sourceIPAddress": "198.51.100.66"}
    assert await record(db, genuine, clock.now()) is None
    assert await record(db, forged, clock.now()) is None
    clock.advance(CONFIG.wait)
    assert await timers(db, clock).fire_due() == 2
    rows = await audit_rows(db)
    assert sorted(d["src_endpoint"]["ip"] for _, d, _ in rows) == ["198.51.100.66", "203.0.113.10"]
    # Both were emitted once the second was known, so both carry the conflict.
    assert all("elevate:event-id-conflict" in d["metadata"]["labels"] for _, d, _ in rows)


async def test_a_record_too_large_for_kafka_is_refused_before_the_transaction(
    db: Database,
) -> None:
    """Its OCSF record would exceed what the broker takes: the batch fails before any
    Kafka work (so the consumer dead-letters that one record and goes on), not inside the
    transaction at every attempt."""
    await grant_event(
        db, GrantActivated(grant_id=uuid.uuid4(), snapshot=snapshot(), activated_at=T0), T0
    )
    small = activity("alice", T0 + timedelta(minutes=1))
    large = activity("alice", T0 + timedelta(minutes=2))
    large["requestParameters"] = {"policy": "x" * MAX_OUTPUT_BYTES}
    async with db.transaction() as session:
        outputs = await handle_batch(
            session, [Received(parse_record(small), "t:0:1")], config=CONFIG, topic="a", now=T0
        )
    assert len(outputs) == 1
    assert len(outputs[0].value) < MAX_OUTPUT_BYTES
    batch = [Received(parse_record(large), "t:0:2")]
    async with db.transaction() as session:
        with pytest.raises(OversizedRecordError):
            await handle_batch(session, batch, config=CONFIG, topic="a", now=T0)
    assert not OversizedRecordError("x").retryable  # dead-lettered, never retried
