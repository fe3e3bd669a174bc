"""The purge of the runtime tables, on SQLite and PostgreSQL, against the real broker: it
keeps replay protection inside retention and drops only what can no longer matter."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiokafka.admin import NewTopic
from elevate_core.clock import ManualClock
from elevate_core.db import Database, utcnow
from elevate_core.errors import PermanentError
from elevate_core.events.envelope import Envelope, encode, new_envelope
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.admin import DAY_MS, longest_stay
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.dedupe import ProcessedEvent
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.purge import NO_TOPICS, Horizons, NoTopics, Purger
from elevate_core.timers import Timer, TimerRunner, schedule
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.tables import Effect
from tests.helpers import create_topics, headers_of, read_all

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The defaults: topics keep 30 days, the margin is a day.
HORIZONS = Horizons(margin=DAY, dedupe=31 * DAY)
ALICE = Person(user_name="alice", user_id="u-alice")


async def nothing_consumed() -> timedelta | None:
    return timedelta(0)


async def record_effect(session: AsyncSession, envelope: Envelope) -> None:
    session.add(Effect(source="consumer", ref=envelope.id))


async def effects(db: Database) -> int:
    async with db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Effect))).scalar_one())


async def dedupe_rows(db: Database) -> dict[str, datetime]:
    async with db.sessions() as s:
        rows = (await s.execute(select(ProcessedEvent.event_id, ProcessedEvent.processed_at))).all()
    return {event_id: at for event_id, at in rows}


async def last_seen(db: Database, event_id: str, at: datetime) -> None:
    """As if the event had last been seen at `at`."""
    async with db.transaction() as s:
        await s.execute(
            update(ProcessedEvent)
            .where(ProcessedEvent.event_id == event_id)
            .values(processed_at=at)
        )


async def published(kafka: KafkaBroker, topic: str, count: int) -> list[Any]:
    producer = kafka.endpoint().producer()
    await producer.start()
    try:
        for n in range(count):
            event = RevokeRequested(request_id=uuid.uuid4(), requested_by=ALICE, reason=f"{n}")
            value, headers = encode(new_envelope(event, source="elevate/test", subject="s"))
            await producer.send_and_wait(topic, value, key=b"s", headers=headers)
    finally:
        await producer.stop()
    return await read_all(kafka.endpoint(), topic, expect=count)


def consumer_of(db: Database, kafka: KafkaBroker, topic: str, prefix: str) -> Consumer:
    config = ConsumerConfig(
        name=f"{prefix}reader",
        topics=(topic,),
        kafka=kafka.endpoint(),
        dlq_topic=f"{prefix}elevate.dlq.v1",
    )
    return Consumer(db, config, record_effect)


def stay_of(endpoint: KafkaEndpoint, topic: str) -> Callable[[], Awaitable[timedelta | None]]:
    return lambda: longest_stay(endpoint, [topic])


async def test_a_purge_keeps_replay_protection_inside_retention(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), topic)  # as the services create topics
    young, old = await published(kafka, topic, 2)
    consumer = consumer_of(db, kafka, topic, topic_prefix)
    for record in (young, old):
        await consumer.process(record)
    assert await effects(db) == 2
    now = utcnow()
    young_id, old_id = headers_of(young)["ce_id"], headers_of(old)["ce_id"]
    await last_seen(db, young_id, now - HORIZONS.dedupe + HOUR)  # inside retention + margin
    await last_seen(db, old_id, now - HORIZONS.dedupe - HOUR)  # no longer on any broker

    purger = Purger(db, HORIZONS, broker_stay=stay_of(kafka.endpoint(), topic))
    assert (await purger.purge_once(now=now))["processed_events"] == 1

    assert set(await dedupe_rows(db)) == {young_id}
    await consumer.process(young)  # re-delivered inside retention: still dropped
    assert await effects(db) == 2


async def test_a_copy_seen_again_is_protected_for_a_whole_horizon_from_then(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    """A re-drive (or a relay re-send) puts a new copy on the broker long after the first:
    the consumer that dropped it must go on dropping it for as long as that copy stays."""
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), topic)
    [record] = await published(kafka, topic, 1)
    consumer = consumer_of(db, kafka, topic, topic_prefix)
    await consumer.process(record)
    ce_id = headers_of(record)["ce_id"]
    first_seen = utcnow() - 20 * DAY
    await last_seen(db, ce_id, first_seen)

    await consumer.process(record)  # the copy, twenty days later: dropped
    purger = Purger(db, HORIZONS, broker_stay=stay_of(kafka.endpoint(), topic))
    await purger.purge_once(now=first_seen + HORIZONS.dedupe + HOUR)

    assert ce_id in await dedupe_rows(db)
    await consumer.process(record)
    assert await effects(db) == 1


async def test_dedupe_rows_stay_while_the_broker_may_still_hold_their_messages(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    # A topic made before segments rolled every 12 h: Kafka's default rolls weekly, so a
    # message may stay 30 + 7 days, longer than the 31-day dedupe horizon.
    topic = f"{topic_prefix}elevate.requests.v1"
    admin = kafka.endpoint().admin()
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"retention.ms": str(30 * DAY_MS)})]
        )
    finally:
        await admin.close()
    [record] = await published(kafka, topic, 1)
    await consumer_of(db, kafka, topic, topic_prefix).process(record)
    now = utcnow()
    await last_seen(db, headers_of(record)["ce_id"], now - HORIZONS.dedupe - HOUR)

    async def consumes_nothing() -> NoTopics:
        return NO_TOPICS  # an API-only replica: the one that consumes knows the topics

    dead = KafkaEndpoint(f"127.0.0.1:{free_port()}")
    for stay in (stay_of(kafka.endpoint(), topic), stay_of(dead, topic), consumes_nothing):
        purged = await Purger(db, HORIZONS, broker_stay=stay).purge_once(now=now)
        assert "processed_events" not in purged
        assert len(await dedupe_rows(db)) == 1
    # dev/test mode: a warning, not a refusal.
    lenient = Purger(db, HORIZONS, broker_stay=stay_of(dead, topic), enforce=False)
    assert (await lenient.purge_once(now=now))["processed_events"] == 1


async def _fire(db: Database, clock: ManualClock, key: str, at: datetime) -> None:
    async def handle(_session: AsyncSession, timer: Timer) -> None:
        if timer.key.startswith("broken"):
            raise PermanentError("bad payload")

    clock.set(at)
    async with db.transaction() as s:
        await schedule(s, kind="t", key=key, due_at=at)
    assert await TimerRunner(db, {"t": handle}, clock=clock).fire_due() == 1


async def test_fired_timers_go_after_the_margin_pending_and_failed_ones_stay(
    db: Database,
) -> None:
    now, clock = utcnow(), ManualClock()
    for key in ("fired-2d-ago", "also-fired-2d-ago"):
        await _fire(db, clock, key, now - 2 * DAY)
    await _fire(db, clock, "broken-2d-ago", now - 2 * DAY)  # its error is kept for diagnosis
    await _fire(db, clock, "fired-1h-ago", now - HOUR)
    async with db.transaction() as s:
        await schedule(s, kind="t", key="overdue", due_at=now - 3 * DAY)
        await schedule(s, kind="t", key="due-tomorrow", due_at=now + DAY)

    purged = await Purger(db, HORIZONS, broker_stay=nothing_consumed, batch_size=1).purge_once(
        now=now
    )

    assert purged["timers"] == 2
    async with db.sessions() as s:
        left = set((await s.execute(select(Timer.key))).scalars())
    assert left == {"broken-2d-ago", "fired-1h-ago", "overdue", "due-tomorrow"}


async def test_sent_outbox_rows_go_after_the_margin_unsent_and_moved_aside_stay(
    db: Database,
) -> None:
    outbox = Outbox(source="elevate/test")
    now = utcnow()
    kinds = ["sent-2d-ago", "sent-3d-ago", "sent-1h-ago", "unsent-40d", "dead-40d", "newest"]
    async with db.transaction() as s:
        for reason in kinds:
            event = RevokeRequested(request_id=uuid.uuid4(), requested_by=ALICE, reason=reason)
            await outbox.add(s, event, subject=reason)
    times = {
        "sent-2d-ago": {"sent_at": now - 2 * DAY},
        "sent-3d-ago": {"sent_at": now - 3 * DAY},
        "sent-1h-ago": {"sent_at": now - HOUR},
        "unsent-40d": {"created_at": now - 40 * DAY},
        "dead-40d": {"created_at": now - 40 * DAY, "dead_at": now - 40 * DAY},
        "newest": {"sent_at": now - 2 * DAY},
    }
    async with db.transaction() as s:
        for key, values in times.items():
            await s.execute(update(OutboxMessage).where(OutboxMessage.key == key).values(**values))

    purger = Purger(db, HORIZONS, broker_stay=nothing_consumed, batch_size=1)
    assert (await purger.purge_once(now=now))["outbox"] == 2

    async with db.sessions() as s:
        left = set((await s.execute(select(OutboxMessage.key))).scalars())
    assert left == {"sent-1h-ago", "unsent-40d", "dead-40d", "newest"}
    # The newest row stays, so no id is ever handed out twice (DLQ letters name row ids).
    async with db.transaction() as s:
        await outbox.add(
            s, RevokeRequested(request_id=uuid.uuid4(), requested_by=ALICE), subject="next"
        )
    async with db.sessions() as s:
        next_id = (
            await s.execute(select(OutboxMessage.id).where(OutboxMessage.key == "next"))
        ).scalar_one()
    assert next_id > len(kinds)  # above every id handed out before
