"""The consumer under the one retry policy, on SQLite and PostgreSQL with the real broker:
transient database trouble in the middle of a batch loses and dead-letters nothing, an
unrelated OSError is dead-lettered at once, and shutdown never waits out a backoff."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elevate_core.db import Database
from elevate_core.errors import TransientError
from elevate_core.events.envelope import Envelope
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.retry import RetryPolicy
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.tables import TestBase
from tests.contract.test_outbox_consumer import effect_count, record_effect, revoke
from tests.harness import (
    counted,
    create_topics,
    eventually,
    headers_of,
    metric,
    migrated,
    publish,
    read_to_end,
    running,
)
from tests.harness import envelope as make_envelope

FAST = RetryPolicy(base_delay=0.05, max_delay=0.5)


async def _publish(
    endpoint: KafkaEndpoint, topic: str, n: int, key: bytes = b"k"
) -> list[Envelope]:
    envelopes = [
        make_envelope(revoke(uuid.uuid4(), i), source="elevate/test", subject=key.decode())
        for i in range(n)
    ]
    await publish(endpoint, topic, *envelopes)
    return envelopes


def _retries(consumer: Consumer) -> dict[str, str]:
    """The labels of the consumer's retries counter (elevate_retries_total)."""
    return {"component": f"consumer:{consumer.config.name}"}


def _consumer(
    db: Database,
    endpoint: KafkaEndpoint,
    prefix: str,
    handler: object,
    *,
    retry: RetryPolicy = FAST,
    group: str = "c",
) -> Consumer:
    return Consumer(
        db,
        ConsumerConfig(
            name=f"{prefix}{group}",
            topics=(f"{prefix}elevate.requests.v1",),
            kafka=endpoint,
            dlq_topic=f"{prefix}elevate.dlq.v1",
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
        ),
        handler,  # type: ignore[arg-type]
        retry=retry,
    )


async def _topics(endpoint: KafkaEndpoint, prefix: str) -> tuple[str, str]:
    topic, dlq = f"{prefix}elevate.requests.v1", f"{prefix}elevate.dlq.v1"
    await create_topics(endpoint, topic, dlq, partitions=1)
    return topic, dlq


async def test_database_lost_mid_batch_loses_and_dead_letters_nothing(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    """The database goes away while the consumer has messages to handle: PostgreSQL drops
    the consumer's connection in the middle of a batch (as a restart or failover does);
    SQLite is locked by another writer when the next batch comes (a batch's transaction
    holds SQLite's one write lock from its start, so no other writer can take it mid-batch).
    Every message is handled exactly once, after retries, and nothing reaches the DLQ."""
    topic, dlq = await _topics(kafka.endpoint(), topic_prefix)
    if db.is_sqlite:
        await _locked_between_batches(db, kafka.endpoint(), topic_prefix, topic)
    else:
        await _dropped_mid_batch(db, kafka.endpoint(), topic_prefix, topic)
    assert await effect_count(db) == 20
    assert await read_to_end(kafka.endpoint(), dlq) == []


async def _dropped_mid_batch(
    db: Database, endpoint: KafkaEndpoint, prefix: str, topic: str
) -> None:
    envelopes = await _publish(endpoint, topic, 20)
    dropped = asyncio.Event()

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.id == envelopes[10].id and not dropped.is_set():
            dropped.set()
            await _terminate_own_backend(db, session)
        await record_effect(session, envelope)

    consumer = _consumer(db, endpoint, prefix, handler)
    before = metric("elevate_retries_total", _retries(consumer))
    async with running(consumer):
        await eventually(lambda: _count_is(db, 20), what="all 20 handled")
    assert metric("elevate_retries_total", _retries(consumer)) >= before + 1  # it was met


async def _locked_between_batches(
    db: Database, endpoint: KafkaEndpoint, prefix: str, topic: str
) -> None:
    impatient = Database(db.url, sqlite_busy_timeout=0.2)  # "database is locked" soon
    consumer = _consumer(impatient, endpoint, prefix, record_effect)
    before = metric("elevate_retries_total", _retries(consumer))
    locked, released = asyncio.Event(), asyncio.Event()
    async with running(consumer):
        await _publish(endpoint, topic, 10)
        await eventually(lambda: _count_is(db, 10), what="the first batch handled")
        holder = asyncio.create_task(_hold_sqlite_lock(db, locked, released))

        async def taken() -> bool:
            return locked.is_set() or holder.done()

        await eventually(taken, what="the other writer holding the lock")
        assert locked.is_set(), holder  # (else the holder failed: its error)
        await _publish(endpoint, topic, 10)
        # Several retries meet the locked database before it is released.
        await counted("elevate_retries_total", before + 3, _retries(consumer))
        released.set()
        await holder
        await eventually(lambda: _count_is(db, 20), what="all 20 handled")
    await impatient.dispose()


async def _true(event: asyncio.Event) -> bool:
    return event.is_set()


async def _count_is(db: Database, n: int) -> bool:
    return await effect_count(db) >= n


async def _hold_sqlite_lock(db: Database, locked: asyncio.Event, released: asyncio.Event) -> None:
    other = Database(db.url)
    async with other.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock
        locked.set()
        await released.wait()
        await conn.rollback()
    await other.dispose()


async def _terminate_own_backend(db: Database, session: AsyncSession) -> None:
    pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    side = Database(db.url)
    async with side.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        await conn.commit()
    await side.dispose()


async def test_unrelated_oserror_is_dead_lettered_at_once(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic, dlq = await _topics(kafka.endpoint(), topic_prefix)
    bad, _good = await _publish(kafka.endpoint(), topic, 2)
    calls: dict[str, int] = {}

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        calls[envelope.id] = calls.get(envelope.id, 0) + 1
        if envelope.id == bad.id:
            raise FileNotFoundError("/etc/elevate/missing.yaml")
        await record_effect(session, envelope)

    async with running(_consumer(db, kafka.endpoint(), topic_prefix, handler)):
        await eventually(lambda: _count_is(db, 1), what="the good message handled")
    [dead] = await read_to_end(kafka.endpoint(), dlq)
    assert headers_of(dead)["ce_id"] == bad.id
    assert "FileNotFoundError" in headers_of(dead)["dlq_error"]
    assert calls[bad.id] == 1  # permanent: not retried at all


async def test_shutdown_during_a_retry_loop_is_prompt_and_keeps_the_message(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic, dlq = await _topics(kafka.endpoint(), topic_prefix)
    await _publish(kafka.endpoint(), topic, 1)
    failures = 0

    async def failing(session: AsyncSession, envelope: Envelope) -> None:
        nonlocal failures
        failures += 1
        raise TransientError("the directory is away")

    slow = RetryPolicy(base_delay=120.0, max_delay=240.0)  # one wait: 1 to 4 minutes
    consumer = _consumer(db, kafka.endpoint(), topic_prefix, failing, retry=slow)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: _positive(lambda: failures), what="a first failure")
    await consumer.stop()
    await asyncio.wait_for(task, 20)  # far less than the backoff it was sitting in

    # Not committed, not dead-lettered: the same group gets the message again.
    async with running(_consumer(db, kafka.endpoint(), topic_prefix, record_effect)):
        await eventually(lambda: _count_is(db, 1), what="the message handled after restart")
    assert await read_to_end(kafka.endpoint(), dlq) == []


async def _positive(value: object) -> bool:
    return bool(value() > 0)  # type: ignore[operator]


# ---- PostgreSQL only: a real deadlock, a real restart ----


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(tmp_path / "pg", ephemeral=True)
    cluster.start()
    yield cluster
    cluster.stop()


async def test_deadlock_in_a_handler_is_retried_not_dead_lettered(
    pg_url: str, kafka: KafkaBroker, topic_prefix: str
) -> None:
    db = await migrated(pg_url, extra=[TestBase.metadata])
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE dl (id int primary key, v int)"))
        await conn.execute(text("INSERT INTO dl VALUES (1, 0), (2, 0)"))
    topic, dlq = await _topics(kafka.endpoint(), topic_prefix)
    [first, second] = await _publish(kafka.endpoint(), topic, 2)
    other_waits = asyncio.Event()
    deadlocked = 0

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        nonlocal deadlocked
        if envelope.id == first.id and deadlocked == 0:
            deadlocked = 1
            # This session detects the deadlock (it waits 50 ms, the other 10 s).
            await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            await session.execute(text("UPDATE dl SET v = v + 1 WHERE id = 1"))
            other = asyncio.create_task(_lock_two_then_one(db, other_waits))
            await other_waits.wait()
            await eventually(lambda: _lock_waiters(db, 1), what="the other waiting for row 1")
            await session.execute(text("UPDATE dl SET v = v + 1 WHERE id = 2"))
            await other
        await record_effect(session, envelope)

    async with running(_consumer(db, kafka.endpoint(), topic_prefix, handler)):
        await eventually(lambda: _count_is(db, 2), what="both handled")
    assert deadlocked == 1
    assert await effect_count(db) == 2
    assert await read_to_end(kafka.endpoint(), dlq) == []
    assert {first.id, second.id}
    await db.dispose()


async def _lock_waiters(db: Database, n: int) -> bool:
    """Whether `n` sessions wait for a row lock (a third connection looks)."""
    async with db.engine.connect() as conn:
        waiting = await conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'")
        )
        return int(waiting.scalar_one()) >= n


async def _lock_two_then_one(db: Database, waiting: asyncio.Event) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(text("SET deadlock_timeout = '10s'"))
        await conn.execute(text("UPDATE dl SET v = v + 10 WHERE id = 2"))
        waiting.set()
        await conn.execute(text("UPDATE dl SET v = v + 10 WHERE id = 1"))
        await conn.commit()


async def test_database_restart_mid_batch_loses_and_dead_letters_nothing(
    own_postgres: PostgresCluster, kafka: KafkaBroker, topic_prefix: str
) -> None:
    db = await migrated(own_postgres.create_database("restart"), extra=[TestBase.metadata])
    topic, dlq = await _topics(kafka.endpoint(), topic_prefix)
    envelopes = await _publish(kafka.endpoint(), topic, 30)
    stopped = asyncio.Event()

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.id == envelopes[12].id and not stopped.is_set():
            stopped.set()
            await asyncio.to_thread(own_postgres.stop)  # mid-batch: the server goes away
        await record_effect(session, envelope)

    consumer = _consumer(db, kafka.endpoint(), topic_prefix, handler)
    before = metric("elevate_retries_total", _retries(consumer))
    async with running(consumer):
        await eventually(lambda: _true(stopped), what="PostgreSQL stopped mid-batch")
        # The consumer meets a database that is not there, and retries.
        await counted("elevate_retries_total", before + 2, _retries(consumer))
        await asyncio.to_thread(own_postgres.start)
        await eventually(lambda: _count_is(db, 30), what="all 30 handled", timeout=120)
    assert await effect_count(db) == 30
    assert await read_to_end(kafka.endpoint(), dlq) == []
    await db.dispose()
