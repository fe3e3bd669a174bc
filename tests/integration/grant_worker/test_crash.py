"""Crash safety: the real service process is SIGKILLed at each fail point, restarted, and
must finish from its recorded intents — no orphan assignment, no duplicated event."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elevate_core.db import Database
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.acls import Principal
from elevate_grant_worker.main import SPEC
from elevate_grant_worker.models import Assignment, Grant, Standing
from elevate_grant_worker.service import grant_id_for
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation
from elevate_local.ports import free_port
from sqlalchemy import func, select

from tests import harness
from tests.harness import database, eventually, outbox, spawn_service
from tests.integration.grant_worker.conftest import Publisher, assignment_exists
from tests.integration.grant_worker.rechecked import (
    PERMISSION_SET,
    approval_for,
    new_member,
    triple_of,
    write_policy,
)


@pytest.fixture
def start(
    pg_url: str, kafka: KafkaBroker, topic_prefix: str, proxy: AwsFaultProxy, tmp_path: Path
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    # The real process re-checks every approval: against this policy and the directory.
    policy_file = write_policy(tmp_path)

    def launch(fail_points: str = "") -> subprocess.Popen[bytes]:
        settings = {
            "fail_points": fail_points,
            "policy_file": policy_file,
            "http_port": free_port(),
            "database_url": pg_url,
            **kafka.endpoint(Principal.GRANT_WORKER).as_settings(),
            **harness.event_settings(Principal.GRANT_WORKER),
            "topic_prefix": topic_prefix,
            "aws_endpoint_url": proxy.endpoint_url,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "log_level": "WARNING",
            "poll_initial_seconds": 0.05,
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "worker_poll_seconds": 0.5,
            "consumer_session_timeout_ms": 6000,
            # A killed leader's lease must expire before the next one leads: keep it short.
            "leader_lease_seconds": 3,
            "aws_timeout_seconds": 1,
        }
        proc = spawn_service("elevate_grant_worker.main", settings)
        procs.append(proc)
        return proc

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    async with database(pg_url, SPEC.migrations) as migrated:
        yield migrated


async def killed(proc: subprocess.Popen[bytes]) -> None:
    assert await asyncio.to_thread(proc.wait, 120) == -9


async def state(db: Database, request_id: object) -> str | None:
    async with db.sessions() as s:
        g = await s.get(Grant, grant_id_for(str(request_id)))
        return g.state if g else None


async def wait_state(db: Database, request_id: object, wanted: str) -> None:
    async def check() -> bool:
        return await state(db, request_id) == wanted

    await eventually(check, timeout=90, what=f"grant in {wanted}")


async def events(db: Database, request_id: object) -> list[str]:
    return [e.verb for e in await outbox(db, key=request_id)]


CASES = {
    # fail point: (dies during activation?, what the database shows after the kill)
    "grant.after_create_intent": True,
    "grant.after_aws_create": True,
    "grant.mid_revoke": False,
    "grant.after_aws_delete": False,
}


@pytest.mark.parametrize("point", list(CASES))
async def test_restart_after_kill_finishes_the_job(
    point: str,
    start: Callable[..., subprocess.Popen[bytes]],
    db: Database,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    moto_endpoint: str,
) -> None:
    member = new_member(moto_endpoint, seeded)  # a real requester: the re-check passes
    t = triple_of(seeded, member)
    now = datetime.now(UTC)
    approved = approval_for(
        member,
        account_id=t.account_id,
        permission_set=PERMISSION_SET,
        permission_set_arn=t.permission_set_arn,
        start=now - timedelta(minutes=1),
        end=now + timedelta(hours=1),
    )
    rid = approved.snapshot.request_id
    revoke = RevokeRequested(request_id=rid, requested_by=Person(user_name="dave", user_id="d"))
    during_activation = CASES[point]

    first = start(point)
    await publish(approved)
    if not during_activation:
        await wait_state(db, rid, "active")
        await publish(revoke)
    await killed(first)

    async with db.sessions() as s:
        row = await s.get(Assignment, (t.account_id, t.permission_set_arn, t.principal_id))
    if point == "grant.after_create_intent":
        assert row is not None
        assert row.state == "creating"  # intent recorded, nothing sent yet
        assert await state(db, rid) == "scheduled"
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
    elif point == "grant.after_aws_create":
        assert row is not None
        assert row.state == "creating"
        assert row.request_id is None
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
    else:
        assert row is not None
        assert row.state == "deleting"
        assert await state(db, rid) == "active"  # ended only once AWS confirms the delete

    second = start()
    if during_activation:
        await wait_state(db, rid, "active")
        assert assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]
        await publish(revoke)
    await wait_state(db, rid, "ended")
    assert assignment_exists(sso, seeded, t) == 0, "orphan assignment"  # type: ignore[arg-type]
    assert await events(db, rid) == ["activated", "ended"]
    async with db.sessions() as s:
        # Our own half-made assignment was recognised as ours, never as a baseline.
        # Our own half-made assignment was never mistaken for standing access.
        baseline = select(func.count()).select_from(Standing).where(Standing.source == "baseline")
        assert (await s.execute(baseline)).scalar_one() == 0
    assert proxy.count("CreateAccountAssignment", "ok") == 1
    second.terminate()
    await asyncio.to_thread(second.wait, 30)
