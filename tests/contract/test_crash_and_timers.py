"""Crash safety and durable timers, in separate processes, on both backends."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from elevate_core.clock import ManualClock
from elevate_core.db import Database
from elevate_core.errors import TransientError
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.timers import Timer, TimerRunner, cancel, schedule
from elevate_local.kafka import KafkaBroker
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.tables import Effect, TestBase
from tests.harness import (
    create_topics,
    data_of,
    headers_of,
    migrated,
    read_all,
    spawn_service,
)


def worker(
    *args: str, fail_points: str = "", kafka: KafkaEndpoint | None = None
) -> subprocess.Popen[bytes]:
    settings = kafka.as_settings() if kafka else {}
    return spawn_service(
        "tests.contract.worker",
        {"fail_points": fail_points, **settings},
        args=args,
        stderr=subprocess.PIPE,
    )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


async def count(db: Database, stmt: object) -> int:
    async with db.sessions() as s:
        return int((await s.execute(stmt)).scalar_one())  # type: ignore[call-overload]


async def test_relay_killed_mid_batch_loses_nothing(
    db: Database, database_url: str, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), topic)
    outbox = Outbox(source="elevate/test", topic_prefix=topic_prefix)
    keys = [uuid.uuid4() for _ in range(5)]
    async with db.transaction() as session:
        for n in range(500):
            key = keys[n % 5]
            await outbox.add(
                session,
                RevokeRequested(
                    request_id=key, requested_by=Person(user_name="a", user_id="u"), reason=f"n={n}"
                ),
                subject=str(key),
            )

    # Dies (SIGKILL) after Kafka acknowledged its 2nd batch, before marking it sent.
    first = worker(
        "relay", database_url, kafka=kafka.endpoint(), fail_points="outbox.after_publish@2"
    )
    assert await wait_exit(first) == -9
    unsent = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    assert await count(db, unsent) == 400  # batch 1 marked; batch 2 published but unmarked

    second = worker("relay", database_url, kafka=kafka.endpoint())
    try:
        records = await read_all(kafka.endpoint(), topic, expect=600, timeout=120)
    finally:
        second.terminate()
        await wait_exit(second)

    delivered = {headers_of(r)["ce_id"] for r in records}
    async with db.sessions() as s:
        written = (await s.execute(select(OutboxMessage.headers))).scalars().all()
    ids = {dict(h)["ce_id"] for h in written}
    assert len(ids) == 500
    assert ids <= delivered, "an outbox row never reached Kafka"
    assert len(records) == 600  # at-least-once: the unmarked batch went out twice
    # Per key, first deliveries keep the written order.
    seen: dict[bytes, list[int]] = {}
    firsts: set[str] = set()
    for r in records:
        ce_id = headers_of(r)["ce_id"]
        if ce_id in firsts:
            continue
        firsts.add(ce_id)
        seen.setdefault(r.key, []).append(int(data_of(r)["reason"][2:]))
    assert all(seq == sorted(seq) for seq in seen.values())


async def test_timer_survives_a_kill_and_fires_once(db: Database, database_url: str) -> None:
    async with db.transaction() as session:
        await schedule(
            session,
            kind="contract",
            key="t-1",
            due_at=datetime.now(UTC) - timedelta(seconds=1),
            payload={"x": 1},
        )

    crashed = worker("timers", database_url, "--until-empty", fail_points="timers.after_handler")
    assert await wait_exit(crashed) == -9
    assert await count(db, select(func.count()).select_from(Effect)) == 0

    again = worker("timers", database_url, "--until-empty")
    assert await wait_exit(again) == 0, again.stderr.read() if again.stderr else ""
    assert await count(db, select(func.count()).select_from(Effect)) == 1
    async with db.sessions() as s:
        timer = (await s.execute(select(Timer).where(Timer.key == "t-1"))).scalar_one()
    assert timer.fired_at is not None

    third = worker("timers", database_url, "--until-empty")
    assert await wait_exit(third) == 0
    assert await count(db, select(func.count()).select_from(Effect)) == 1


async def test_two_processes_never_fire_the_same_timer(pg_url: str) -> None:
    db = await migrated(pg_url, extra=[TestBase.metadata])
    due = datetime.now(UTC) - timedelta(seconds=1)
    async with db.transaction() as session:
        for n in range(300):
            await schedule(session, kind="contract", key=f"t-{n}", due_at=due)

    procs = [worker("timers", pg_url, "--until-empty", "--delay", "0.005") for _ in range(2)]
    codes = [await wait_exit(p) for p in procs]
    assert codes == [0, 0]
    async with db.sessions() as s:
        rows = (await s.execute(select(Effect.ref, Effect.detail))).all()
    assert len(rows) == 300
    assert len({ref for ref, _ in rows}) == 300
    assert len({pid for _, pid in rows}) == 2, "both processes should have claimed timers"
    await db.dispose()


async def test_runner_fires_due_timers_by_injected_clock(db: Database) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    fired: list[str] = []

    async def handle(session: AsyncSession, timer: Timer) -> None:
        fired.append(timer.key)

    async with db.transaction() as session:
        await schedule(session, kind="k", key="later", due_at=clock.now() + timedelta(hours=2))
        await schedule(session, kind="k", key="soon", due_at=clock.now() + timedelta(minutes=5))
        await schedule(session, kind="k", key="gone", due_at=clock.now() + timedelta(minutes=1))
        await cancel(session, kind="k", key="gone")
    runner = TimerRunner(db, {"k": handle}, clock=clock)
    assert await runner.fire_due() == 0
    assert await runner.next_due() == clock.now() + timedelta(minutes=5)
    clock.advance(timedelta(minutes=5))
    assert await runner.fire_due() == 1
    clock.advance(timedelta(hours=3))
    assert await runner.fire_due() == 1
    assert fired == ["soon", "later"]
    assert await runner.next_due() is None


async def test_failing_timer_is_retried_with_backoff(db: Database) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    attempts = 0

    async def flaky(session: AsyncSession, timer: Timer) -> None:
        nonlocal attempts
        attempts += 1
        session.add(Effect(source="timer", ref=timer.key))
        if attempts < 3:
            raise TransientError("AWS throttled")

    async with db.transaction() as session:
        await schedule(session, kind="k", key="flaky", due_at=clock.now())
    runner = TimerRunner(db, {"k": flaky}, clock=clock)
    for _ in range(3):
        await runner.fire_due()
        clock.advance(timedelta(minutes=10))
    assert attempts == 3
    # Failed attempts' effects were rolled back with their savepoint; only one remains.
    assert await count(db, select(func.count()).select_from(Effect)) == 1
    async with db.sessions() as s:
        timer = (await s.execute(select(Timer))).scalar_one()
    assert timer.fired_at is not None
    assert timer.attempts == 2


@pytest.mark.parametrize("n", [1])
async def test_schedule_is_idempotent_per_kind_and_key(db: Database, n: int) -> None:
    when = datetime(2026, 3, 1, tzinfo=UTC)
    for _ in range(3):
        async with db.transaction() as session:
            await schedule(session, kind="k", key="same", due_at=when)
    assert await count(db, select(func.count()).select_from(Timer)) == n
