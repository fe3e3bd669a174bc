"""Crash safety: the real service process is SIGKILLed at each fail point, restarted, and
must finish from its recorded intents — no orphan assignment, no duplicated event."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elevate_core.db import Database
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.migrate import upgrade
from elevate_core.outbox import OutboxMessage
from elevate_grant_worker.main import SPEC
from elevate_grant_worker.models import Assignment, Grant, Standing
from elevate_grant_worker.service import grant_id_for
from elevate_local import runs
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation
from elevate_local.ports import free_port
from sqlalchemy import func, select

from tests.helpers import eventually
from tests.integration.grant_worker.conftest import (
    Publisher,
    approval,
    assignment_exists,
    new_triple,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def start(
    pg_url: str, kafka: KafkaBroker, topic_prefix: str, proxy: AwsFaultProxy
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def launch(fail_points: str = "") -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "ELEVATE_MODE": "test",
            "ELEVATE_FAIL_POINTS": fail_points,
            "ELEVATE_HTTP_PORT": str(free_port()),
            "ELEVATE_DATABASE_URL": pg_url,
            "ELEVATE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "ELEVATE_TOPIC_PREFIX": topic_prefix,
            "ELEVATE_AWS_ENDPOINT_URL": proxy.endpoint_url,
            "ELEVATE_AWS_ACCESS_KEY_ID": "testing",
            "ELEVATE_AWS_SECRET_ACCESS_KEY": "testing",
            "ELEVATE_LOG_LEVEL": "WARNING",
            "ELEVATE_POLL_INITIAL_SECONDS": "0.05",
            "ELEVATE_RETRY_BASE_SECONDS": "0.05",
            "ELEVATE_RETRY_MAX_SECONDS": "0.5",
            "ELEVATE_WORKER_POLL_SECONDS": "0.5",
            "ELEVATE_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            # A killed leader's lease must expire before the next one leads: keep it short.
            "ELEVATE_LEADER_LEASE_SECONDS": "3",
            "ELEVATE_AWS_TIMEOUT_SECONDS": "1",
        }
        proc = runs.spawn(
            [sys.executable, "-m", "elevate_grant_worker.main"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
    database = Database(pg_url)
    await upgrade(database, SPEC.migrations)
    yield database
    await database.dispose()


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
    async with db.sessions() as s:
        rows = (await s.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
        return [dict(r.headers)["ce_type"].split(".")[-2] for r in rows if r.key == str(request_id)]


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
) -> None:
    t = new_triple(seeded)
    now = datetime.now(UTC)
    approved = approval(t, start=now - timedelta(minutes=1), end=now + timedelta(hours=1))
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
