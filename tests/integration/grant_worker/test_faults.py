"""AWS misbehaving (through the proxy) and replays of the decisions topic."""

from __future__ import annotations

import uuid
from datetime import timedelta

from elevate_core.events.topics import Topics
from elevate_grant_worker.models import Assignment, Grant
from elevate_local.aws_proxy import AwsFaultProxy, FaultRule
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation
from sqlalchemy import func, select

from tests.helpers import eventually
from tests.integration.grant_worker.conftest import (
    T0,
    Factory,
    Publisher,
    approval,
    assignment_exists,
    caught_up,
    new_triple,
    running,
)

HOUR = timedelta(hours=1)
WRITES = ("CreateAccountAssignment", "DeleteAccountAssignment")


async def test_fifty_grants_through_throttling_conflicts_and_5xx(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    for fault in ("throttle", "conflict", "http500"):
        proxy.add_rule(FaultRule(fault=fault, rate=0.12))  # ≈ 32% of calls fail
    proxy.add_rule(FaultRule(fault="in_progress", polls=2))
    rate, cap = 40, 5
    # A generous timeout: on a loaded machine a 2 s timeout lets moto accept a write the
    # worker no longer knows about (it then finds the assignment and never polls it), so
    # the proxy would count that write in flight for ever. This test is about the faults
    # it injects, not about timeouts.
    settings = make_settings(
        aws_calls_per_second=rate,
        aws_max_in_flight_writes=cap,
        revocation_attempts=50,
        aws_timeout_seconds=30.0,
        leader_lease_seconds=90.0,
    )
    accounts = ["payments-staging", "sandbox-shared", "data-prod"]
    triples = [new_triple(seeded, account=accounts[n % 3]) for n in range(50)]
    grants = [approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR) for t in triples]
    async with running(settings) as w:
        await publish(*grants)

        async def all_in(state: str) -> bool:
            async with w.db.sessions() as s:
                n = await s.execute(
                    select(func.count()).select_from(Grant).where(Grant.state == state)
                )
                return int(n.scalar_one()) == len(grants)

        await eventually(lambda: all_in("active"), timeout=120, what="50 activations")
        for t in triples:
            assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
        w.advance(HOUR + timedelta(seconds=1))
        await eventually(lambda: all_in("ended"), timeout=120, what="50 revocations")
        for g in grants:
            assert await w.events(g.snapshot.request_id) == ["activated", "ended"]
    for t in triples:
        assert assignment_exists(sso, seeded, t) == 0, f"orphan {t}"  # type: ignore[arg-type]
    faults = sum(proxy.count(outcome=o) for o in ("throttle", "conflict", "http500"))
    assert faults > 50, proxy.stats()
    assert proxy.count(outcome="in_progress") >= 100
    assert proxy.peak_calls_per_second <= rate, proxy.stats()
    assert proxy.peak_in_flight <= cap, proxy.stats()


async def test_failed_creation_is_retried_then_reported(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    proxy.add_rule(
        FaultRule(fault="failed", operations=frozenset({"DescribeAccountAssignmentCreationStatus"}))
    )
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(make_settings(activation_attempts=3)) as w:
        await publish(approved)
        g = await w.wait_state(approved.snapshot.request_id, "failed")
        assert g.failure is not None
        assert "could not be provisioned" in g.failure
        assert proxy.count("CreateAccountAssignment", "ok") == 3
        assert await w.events(approved.snapshot.request_id) == ["failed"]
    assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


async def test_failing_revocation_alerts_and_keeps_retrying(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    async with running(make_settings(revocation_attempts=2)) as w:
        await publish(approved)
        await w.wait_state(rid, "active")
        denied = proxy.add_rule(
            FaultRule(
                fault="failed", operations=frozenset({"DescribeAccountAssignmentDeletionStatus"})
            )
        )
        w.advance(HOUR)

        async def alerted() -> bool:
            return "failed" in await w.events(rid)

        await eventually(alerted, what="GrantRevocationFailed")
        g = await w.grant(rid)
        assert g is not None
        assert g.state == "active"  # not ended while AWS still holds the assignment
        assert g.stop_kind is None
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
        proxy.rules.remove(denied)  # AWS recovers: the periodic retry finishes the job
        g = await w.wait_state(rid, "ended")
        assert g.assignment_removed is True
        assert await w.events(rid) == ["activated", "failed", "ended"]
    assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


async def test_replaying_decisions_never_touches_ended_grants(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    kafka: KafkaBroker,
    topic_prefix: str,
    postgres: object,
) -> None:
    triples = [new_triple(seeded) for _ in range(3)]
    grants = [approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR) for t in triples]
    async with running(make_settings()) as w:
        await publish(*grants)
        for g in grants:
            await w.wait_state(g.snapshot.request_id, "active")
        w.advance(2 * HOUR)
        for g in grants:
            await w.wait_state(g.snapshot.request_id, "ended")
        clock = w.clock
    writes_before = sum(proxy.count(op) for op in WRITES)
    topic = f"{topic_prefix}{Topics.DECISIONS}"

    # Into the existing database, from the earliest offset (a new consumer group). A later
    # approval whose window has passed is the marker: the worker settles it (ended, no AWS
    # call) only in a scan after the replay was recorded, so once it has ended, anything
    # the replayed approvals were going to make the worker do has been done.
    marker_triple = new_triple(seeded)
    marker = approval(marker_triple, start=T0, end=T0 + timedelta(minutes=1))
    async with running(make_settings(consumer_group_suffix=".replay1"), clock=clock) as w1:
        await caught_up(kafka.endpoint(), f"{topic_prefix}grant-worker.decisions.replay1", topic)
        await publish(marker)
        settled = await w1.wait_state(marker.snapshot.request_id, "ended")
        assert settled.end_reason == "expired"
        for g in grants:
            assert await w1.events(g.snapshot.request_id) == ["activated", "ended"]
    assert sum(proxy.count(op) for op in WRITES) == writes_before

    # Into an empty database.
    fresh = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")  # type: ignore[attr-defined]
    async with running(
        make_settings(pg_url=fresh, consumer_group_suffix=".replay2"), clock=clock
    ) as w2:
        await caught_up(kafka.endpoint(), f"{topic_prefix}grant-worker.decisions.replay2", topic)
        for g in [*grants, marker]:
            lapsed = await w2.wait_state(g.snapshot.request_id, "ended")
            assert lapsed.end_reason == "expired"  # their window passed: never served again
            assert lapsed.activated_at is None
            assert await w2.events(g.snapshot.request_id) == ["ended"]
    assert sum(proxy.count(op) for op in WRITES) == writes_before
    for t in [*triples, marker_triple]:
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


async def test_a_create_still_in_progress_has_its_request_id_recorded_before_the_wait(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    """The first status poll comes at once, before AWS's request id is written (it often
    finds the create done: one write less). One that does not must record the id before
    waiting, so a crash during the wait resumes by polling that very request."""
    proxy.add_rule(FaultRule(fault="in_progress", polls=1_000_000))
    settings = make_settings(poll_initial_seconds=0.2, poll_max_seconds=0.2)
    t = new_triple(seeded, account="sandbox-shared")
    grant = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(settings) as w:
        await publish(grant)

        async def recorded() -> bool:
            async with w.db.sessions() as s:
                row = await s.get(Assignment, (t.account_id, t.permission_set_arn, t.principal_id))
                return row is not None and row.state == "creating" and bool(row.request_id)

        await eventually(recorded, timeout=60, what="the in-progress create's request id")
        proxy.clear_rules()
        await w.wait_state(grant.snapshot.request_id, "active")
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
        assert await w.events(grant.snapshot.request_id) == ["activated"]
