"""Approve → assignment in AWS → end → gone; overlapping grants; standing access."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from elevate_core.db import Database
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.outbox import Outbox
from elevate_grant_worker import service
from elevate_grant_worker.aws import Triple
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.moto_seed import SeededOrganisation

from tests.integration.grant_worker.conftest import (
    T0,
    Factory,
    Publisher,
    approval,
    assignment_exists,
    new_triple,
    running,
)

HOUR = timedelta(hours=1)


async def test_approve_activate_end_removes_assignment(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    async with running(make_settings()) as w:
        await publish(approved)
        g = await w.wait_state(rid, "active")
        assert g.activated_at == T0
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
        assert proxy.count("CreateAccountAssignment", "ok") == 1

        w.advance(HOUR + timedelta(seconds=1))
        g = await w.wait_state(rid, "ended")
        assert g.end_reason == "expired"
        assert g.assignment_removed is True
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
        assert proxy.count("DescribeAccountAssignmentDeletionStatus", "ok") >= 1
        assert await w.events(rid) == ["activated", "ended"]
        # Timers and replays of the same approval change nothing more.
        await publish(approved)
        w.advance(HOUR)
        await w.passed_a_scan(publish, seeded)
        assert await w.events(rid) == ["activated", "ended"]


async def test_scheduled_grant_activates_at_start_and_revoke_ends_it(
    make_settings: Factory, publish: Publisher, seeded: SeededOrganisation, sso: object
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 + HOUR, end=T0 + 3 * HOUR)
    rid = approved.snapshot.request_id
    async with running(make_settings()) as w:
        await publish(approved)
        await w.wait_state(rid, "scheduled")
        assert await w.events(rid) == ["scheduled"]
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
        w.advance(HOUR)
        await w.wait_state(rid, "active")
        await publish(
            RevokeRequested(request_id=rid, requested_by=Person(user_name="dave", user_id="d"))
        )
        g = await w.wait_state(rid, "ended")
        assert g.end_reason == "revoked"
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
        assert await w.events(rid) == ["scheduled", "activated", "ended"]


async def test_overlapping_grants_keep_access_until_the_last_ends(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    t = new_triple(seeded)
    first = approval(t, start=T0 - timedelta(minutes=5), end=T0 + HOUR)
    second = approval(t, start=T0 + timedelta(minutes=30), end=T0 + 2 * HOUR)
    a, b = first.snapshot.request_id, second.snapshot.request_id
    async with running(make_settings()) as w:
        await publish(first, second)
        await w.wait_state(a, "active")
        w.advance(timedelta(minutes=31))
        await w.wait_state(b, "active")
        assert proxy.count("CreateAccountAssignment", "ok") == 1  # one assignment, two holders

        w.advance(HOUR)  # the first ends: the second still holds the assignment
        g = await w.wait_state(a, "ended")
        assert g.assignment_removed is False
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
        assert proxy.count("DeleteAccountAssignment") == 0

        w.advance(HOUR)  # the second ends: nobody holds it any more
        g = await w.wait_state(b, "ended")
        assert g.assignment_removed is True
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
        assert await w.events(a) == ["activated", "ended"]
        assert await w.events(b) == ["scheduled", "activated", "ended"]


async def test_standing_assignments_survive_every_grant_on_top(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    # (1) baseline: present in AWS before Elevate; (2) listed as standing by policy.
    baseline, listed = new_triple(seeded), new_triple(seeded, permission_set="ReadOnlyAccess")
    sso.create_account_assignment(  # type: ignore[attr-defined]
        InstanceArn=seeded.instance_arn,
        TargetId=baseline.account_id,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=baseline.permission_set_arn,
        PrincipalType="USER",
        PrincipalId=baseline.principal_id,
    )
    grants = [
        approval(baseline, start=T0 - timedelta(minutes=1), end=T0 + HOUR),
        approval(baseline, start=T0 - timedelta(minutes=1), end=T0 + 2 * HOUR),
        approval(listed, start=T0 - timedelta(minutes=1), end=T0 + HOUR),
    ]
    async with running(make_settings(), standing=lambda: [listed]) as w:
        await publish(*grants)
        for g in grants:
            await w.wait_state(g.snapshot.request_id, "active")
        # The baseline assignment was found, not created; the listed one had to be created.
        assert proxy.count("CreateAccountAssignment", "ok") == 1
        assert "recorded" in await w.events(None)
        w.advance(3 * HOUR)
        for g in grants:
            ended = await w.wait_state(g.snapshot.request_id, "ended")
            assert ended.assignment_removed is False
        assert assignment_exists(sso, seeded, baseline) == 1  # type: ignore[arg-type]
        assert assignment_exists(sso, seeded, listed) == 1  # type: ignore[arg-type]
        assert proxy.count("DeleteAccountAssignment") == 0


async def test_a_decision_and_a_revoke_start_their_triple_without_waiting_for_a_scan(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
) -> None:
    """Every scan that starts once the grant is recorded is held open: the approval still
    becomes access and the revoke still removes it, because the commits that recorded them
    named the triple and the worker started it at once (the scan is only the safety net)."""
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    async with running(make_settings()) as w:
        await w.passed_a_scan(publish, seeded)  # the worker leads and waits for work
        worker = w.worker
        scan = worker.due_triples
        release = asyncio.Event()
        held: list[str] = []

        async def held_scan(**kwargs: Any) -> list[Triple]:
            grant = await w.grant(rid)
            if grant is not None:  # recorded: this scan would find the triple — hold it
                held.append(grant.state)
                await release.wait()
            return await scan(**kwargs)

        worker.due_triples = held_scan  # type: ignore[method-assign]
        try:
            await publish(approved)
            assert (await w.wait_state(rid, "active", timeout=20)).state == "active"
            assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
            await publish(
                RevokeRequested(request_id=rid, requested_by=Person(user_name="dave", user_id="d"))
            )
            assert (await w.wait_state(rid, "ended", timeout=20)).end_reason == "revoked"
            assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
            assert held, "no scan ran while the grant was served: nothing was held"
        finally:
            release.set()


async def test_a_decision_another_replica_records_wakes_the_leader(
    make_settings: Factory, publish: Publisher, seeded: SeededOrganisation, sso: object
) -> None:
    """On PostgreSQL the leader LISTENs for work: an approval a replica that does not lead
    recorded (here a commit whose only signal is its NOTIFY) is served at once, not at the
    next poll ten minutes later."""
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    settings = make_settings(worker_poll_seconds=600.0)
    async with running(settings) as w:
        await w.passed_a_scan(publish, seeded)  # it leads, and now waits for work
        other = Database(settings.database_url)
        try:
            async with other.transaction() as session:
                outbox = Outbox(source="elevate/grant-worker", topic_prefix=settings.topic_prefix)
                await service.approve(
                    session, event=approved, outbox=outbox, now=w.clock.now(), gate=None
                )
                session.info.pop("elevate_notify")  # no wake-up in this process: NOTIFY only
        finally:
            await other.dispose()
        assert (await w.wait_state(rid, "active", timeout=30)).state == "active"
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
