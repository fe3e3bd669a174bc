"""grant-worker 2/4: no revoke, cancel or end time can be lost — across calls held open in
AWS, a cancel racing its approval, a leader losing its database session, and a replay of
every topic into an empty database. Real PostgreSQL, Kafka and moto behind the fault proxy;
interleavings are forced (a call held open, a transaction holding its lock), never slept
into. Each ends with no assignment that no grant or standing entry backs, the right request
status, and exactly one `GrantEnded` per grant."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from elevate_core.clock import ManualClock
from elevate_core.db import Database
from elevate_core.events.models import Person, RequestCancelled, RevokeRequested
from elevate_core.kafka.consumer import Consumer
from elevate_core.lease import LeaseRow
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox
from elevate_grant_worker import service
from elevate_grant_worker.main import SPEC
from elevate_grant_worker.models import Assignment, Grant
from elevate_local.aws_proxy import AwsFaultProxy, FaultRule
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation
from elevate_local.postgres import PostgresCluster
from sqlalchemy import func, select, text

from tests.helpers import eventually
from tests.integration.grant_worker.conftest import (
    T0,
    DbLink,
    Factory,
    Publisher,
    ReadModel,
    approval,
    assignment_exists,
    caught_up,
    new_triple,
    running,
)

HOUR = timedelta(hours=1)
DAVE = Person(user_name="dave", user_id="u-dave")
WRITES = ("CreateAccountAssignment", "DeleteAccountAssignment")
STATUS = {"revoke": "revoked", "cancel": "cancelled", "end": "ended"}
REASON = {"revoke": "revoked", "cancel": "cancelled", "end": "expired"}


def _stop(kind: str, request_id: uuid.UUID) -> RevokeRequested | RequestCancelled:
    if kind == "revoke":
        return RevokeRequested(request_id=request_id, requested_by=DAVE)
    return RequestCancelled(request_id=request_id, cancelled_by=DAVE)


@pytest.mark.parametrize("failing_delete", [False, True], ids=["", "failing-delete"])
@pytest.mark.parametrize(
    "held", ["CreateAccountAssignment", "DescribeAccountAssignmentCreationStatus"]
)
@pytest.mark.parametrize("kind", ["revoke", "cancel", "end"])
async def test_a_stop_while_the_create_is_in_flight_is_never_lost(
    kind: str,
    held: str,
    failing_delete: bool,
    make_settings: Factory,
    publish: Publisher,
    read_model: ReadModel,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    hold = proxy.hold(held)
    async with running(make_settings()) as w:
        await publish(approved)
        await asyncio.to_thread(hold.wait_reached)  # the create is in flight now
        if kind == "end":
            w.advance(HOUR + timedelta(seconds=1))
        else:
            await publish(_stop(kind, rid))
            await eventually(lambda: _stopped(w, rid), what="the stop recorded")
        if failing_delete:
            proxy.add_rule(
                FaultRule(
                    fault="failed",
                    operations=frozenset({"DescribeAccountAssignmentDeletionStatus"}),
                    limit=1,
                )
            )
        hold.release()
        g = await w.wait_state(rid, "ended")
        assert g.end_reason == REASON[kind]
        assert await w.events(rid) == ["ended"]  # never served: one GrantEnded, no activation
        await read_model.wait_status(rid, STATUS[kind])
    assert assignment_exists(sso, seeded, t) == 0, "the create finished; the stop removed it"  # type: ignore[arg-type]
    assert proxy.count("CreateAccountAssignment", "ok") == 1
    if failing_delete:
        assert proxy.count("DescribeAccountAssignmentDeletionStatus", "failed") == 1


async def _stopped(w: object, rid: uuid.UUID) -> bool:
    g = await w.grant(rid)  # type: ignore[attr-defined]
    return g is not None and g.stop_kind is not None


# ---- a cancel racing its approval, decided under one lock ----


async def _blocked_on_a_lock(db: Database) -> bool:
    if db.is_sqlite:
        return True  # BEGIN IMMEDIATE: the second transaction cannot even begin
    async with db.engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
        return int(waiting.scalar_one()) > 0


@pytest.mark.parametrize("first", ["approval", "cancel"])
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_a_cancel_racing_its_approval_is_never_served(
    first: str,
    backend: str,
    pg_url: str,
    sqlite_url: str,
    make_settings: Factory,
    read_model: ReadModel,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    url = pg_url if backend == "postgresql" else sqlite_url
    db = Database(url)
    await upgrade(db, SPEC.migrations)
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = str(approved.snapshot.request_id)
    outbox = Outbox(source="elevate/grant-worker")

    async def approve(session: object) -> None:
        await service.approve(session, event=approved, outbox=outbox, now=T0, gate=None)  # type: ignore[arg-type]

    async def cancel(session: object) -> None:
        await service.stop(session, request_id=rid, kind="cancelled", now=T0)  # type: ignore[arg-type]

    one, two = (approve, cancel) if first == "approval" else (cancel, approve)
    async with db.sessions() as holder:
        async with holder.begin():
            await one(holder)  # holds the request's row lock, uncommitted

            async def second() -> None:
                async with db.transaction() as session:
                    await two(session)

            racer = asyncio.create_task(second())
            await eventually(lambda: _blocked_on_a_lock(db), what="the racer waits on the lock")
            assert not racer.done()
        await racer  # it went on only after the first committed, and saw what it did
    async with db.sessions() as s:
        grant = await s.get(Grant, service.grant_id_for(rid))
    assert grant is not None
    assert grant.snapshot is not None
    assert grant.stop_kind == "cancelled"
    await db.dispose()

    async with running(make_settings(pg_url=url)) as w:
        g = await w.wait_state(approved.snapshot.request_id, "ended")
        assert g.end_reason == "cancelled"
        assert await w.events(approved.snapshot.request_id) == ["ended"]
        await read_model.wait_status(approved.snapshot.request_id, "cancelled")
    assert proxy.calls_of("CreateAccountAssignment") == []
    assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


# ---- fencing: a leader that lost its database session does nothing more ----


@pytest.fixture
async def second_proxy(moto_endpoint: str) -> AsyncIterator[AwsFaultProxy]:
    p = AwsFaultProxy(moto_endpoint, seed=2)
    p.start()
    yield p
    p.stop()


@pytest.fixture
async def db_link(pg_url: str, postgres: PostgresCluster) -> AsyncIterator[DbLink]:
    link = DbLink(postgres.port, postgres.url())
    await link.start()
    yield link
    await link.stop()


async def _leader(db: Database) -> tuple[int, str] | None:
    async with db.sessions() as s:
        row = await s.get(LeaseRow, "grant-worker.assignments")
        return (row.epoch, row.holder) if row is not None else None


async def test_a_leader_that_lost_its_session_makes_no_call_and_no_write(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    second_proxy: AwsFaultProxy,
    db_link: DbLink,
    pg_url: str,
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    observer = Database(pg_url)
    clock = ManualClock(T0)
    # Held after moto acted: the old leader's create is done in AWS, its answer withheld.
    hold = proxy.hold("CreateAccountAssignment", after=True, match={"PrincipalId": t.principal_id})
    first = make_settings(pg_url=db_link.url(pg_url))
    async with running(first, clock=clock) as w1:
        await publish(approved)
        await asyncio.to_thread(hold.wait_reached)
        old = await _leader(observer)
        assert old is not None
        assert await db_link.cut() > 0  # its sessions are gone and it cannot reconnect
        await eventually(lambda: _not_leading(w1), what="the first worker noticed")
        second = make_settings(aws=second_proxy.endpoint_url)
        async with running(second, clock=clock) as w2:
            await eventually(lambda: _led_by_another(observer, old), what="the second leads")
            took_over = time.monotonic()
            db_link.restore()
            hold.release()  # the old leader's call returns now: it must do nothing with it
            g = await w2.wait_state(rid, "active")
            assert g.activated_at is not None
            assert await w2.events(rid) == ["activated"]
            new = await _leader(observer)
            assert new is not None
            async with observer.sessions() as s:
                row = await s.get(Assignment, (t.account_id, t.permission_set_arn, t.principal_id))
            assert row is not None
            assert row.epoch == new[0]  # the last write is the new leader's
            late = [c for c in proxy.calls if c.at > took_over]
            assert late == [], f"the old leader called AWS after the takeover: {late}"
            assert w1.worker.lease.epoch is None  # and it knows it does not lead
    assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
    assert second_proxy.count("CreateAccountAssignment") == 0  # found, adopted, not re-made
    await observer.dispose()


async def _not_leading(w: object) -> bool:
    return w.worker.lease.epoch is None  # type: ignore[attr-defined]


async def _led_by_another(db: Database, old: tuple[int, str]) -> bool:
    now = await _leader(db)
    return now is not None and now[0] > old[0] and now[1] != old[1]


# ---- a replay of every topic into an empty database ----


async def test_a_replay_into_an_empty_database_re_grants_nothing(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    kafka: KafkaBroker,
    topic_prefix: str,
    postgres: PostgresCluster,
) -> None:
    active, revoked, cancelled, early = (new_triple(seeded) for _ in range(4))
    g_active = approval(active, start=T0 - timedelta(minutes=1), end=T0 + 2 * HOUR)
    g_revoked = approval(revoked, start=T0 - timedelta(minutes=1), end=T0 + 2 * HOUR)
    g_cancelled = approval(cancelled, start=T0 + HOUR, end=T0 + 2 * HOUR)
    g_early = approval(early, start=T0 - timedelta(minutes=1), end=T0 + 2 * HOUR)
    rid = {
        name: g.snapshot.request_id
        for name, g in (("a", g_active), ("r", g_revoked), ("c", g_cancelled), ("e", g_early))
    }
    async with running(make_settings()) as w:
        await publish(RequestCancelled(request_id=rid["e"], cancelled_by=DAVE))  # before it
        await publish(g_active, g_revoked, g_cancelled, g_early)
        await w.wait_state(rid["a"], "active")
        await w.wait_state(rid["r"], "active")
        await w.wait_state(rid["c"], "scheduled")
        await publish(
            RevokeRequested(request_id=rid["r"], requested_by=DAVE),
            RequestCancelled(request_id=rid["c"], cancelled_by=DAVE),
        )
        for key in "rce":
            await w.wait_state(rid[key], "ended")
        clock = w.clock
    writes = sum(proxy.count(op) for op in WRITES)
    assert assignment_exists(sso, seeded, active) == 1  # type: ignore[arg-type]

    # Every topic from the earliest offset, into an empty database; the stops consumer is
    # held back until the approvals have all been read — the order that used to re-grant.
    fresh = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    suffix = ".replay"
    stops = f"{topic_prefix}grant-worker.requests{suffix}"
    replay = make_settings(pg_url=fresh, consumer_group_suffix=suffix)
    async with running(
        replay, clock=clock, hold_back=lambda x: isinstance(x, Consumer) and x.config.name == stops
    ) as b:
        await caught_up(
            kafka.endpoint(),
            f"{topic_prefix}grant-worker.decisions{suffix}",
            f"{topic_prefix}elevate.decisions.v1",
        )
        # The worker looked at the revoked grant's triple and chose to wait: a positive sign
        # that it reached the point where it would otherwise have created it.
        await eventually(lambda: _waited(b.db, revoked), what="the worker waiting at the gate")
        assert sum(proxy.count(op) for op in WRITES) == writes
        b.start_held()
        for key in "rce":
            g = await b.wait_state(rid[key], "ended")
            assert g.activated_at is None
        await b.wait_state(rid["a"], "active")
        for key in "rce":
            assert await b.ended_events(rid[key]) == 1
    assert sum(proxy.count(op) for op in WRITES) == writes, "the replay wrote to AWS"
    assert assignment_exists(sso, seeded, active) == 1  # type: ignore[arg-type]
    for t in (revoked, cancelled, early):
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


async def _waited(db: Database, t: object) -> bool:
    async with db.sessions() as s:
        row = await s.get(Assignment, (t.account_id, t.permission_set_arn, t.principal_id))  # type: ignore[attr-defined]
        grants = (await s.execute(select(func.count()).select_from(Grant))).scalar_one()
    return row is not None and row.next_check_at is not None and grants >= 4


# ---- stops of scheduled grants are visible ----


@pytest.mark.parametrize("kind", ["revoke", "cancel"])
async def test_stopping_a_scheduled_grant_ends_it_visibly(
    kind: str,
    make_settings: Factory,
    publish: Publisher,
    read_model: ReadModel,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 + HOUR, end=T0 + 2 * HOUR)
    rid = approved.snapshot.request_id
    async with running(make_settings()) as w:
        await publish(approved)
        await read_model.wait_status(rid, "scheduled")
        await publish(_stop(kind, rid))
        g = await w.wait_state(rid, "ended")
        assert g.end_reason == REASON[kind]
        assert g.assignment_removed is False
        await read_model.wait_status(rid, STATUS[kind])
        w.advance(HOUR)  # its start passes: it stays ended, nothing is created
        await w.passed_a_scan(publish, seeded)
        assert await w.events(rid) == ["scheduled", "ended"]
    assert proxy.calls_of("CreateAccountAssignment") == []
    assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
