"""Outbox → Kafka → consumer, on SQLite and PostgreSQL, against the real broker."""

from __future__ import annotations

import json
import uuid

from elevate_core.db import Database
from elevate_core.events.envelope import Envelope, encode, new_envelope
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.dedupe import ProcessedEvent
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.relay import OutboxRelay
from elevate_local.kafka import KafkaBroker
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.tables import Effect
from tests.harness import (
    counted,
    create_topics,
    data_of,
    eventually,
    headers_of,
    metric,
    read_all,
    running,
)

ALICE = Person(user_name="alice", user_id="u-alice")


def revoke(request_id: uuid.UUID, n: int = 0) -> RevokeRequested:
    return RevokeRequested(request_id=request_id, requested_by=ALICE, reason=f"n={n}")


async def record_effect(session: AsyncSession, envelope: Envelope) -> None:
    session.add(
        Effect(source="consumer", ref=envelope.id, detail=str(envelope.data.get("reason", "")))
    )


async def effect_count(db: Database, source: str = "consumer") -> int:
    async with db.sessions() as s:
        return int(
            (
                await s.execute(
                    select(func.count()).select_from(Effect).where(Effect.source == source)
                )
            ).scalar_one()
        )


async def test_round_trip(db: Database, kafka: KafkaBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    dlq = f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), topic, dlq)
    outbox = Outbox(source="elevate/test", topic_prefix=topic_prefix)
    request_id = uuid.uuid4()
    async with db.transaction() as session:
        ce_id = await outbox.add(session, revoke(request_id), subject=str(request_id))

    relay = OutboxRelay(db, kafka=kafka.endpoint(), client_id="relay-rt")
    consumer = Consumer(
        db,
        ConsumerConfig(
            name=f"{topic_prefix}c",
            topics=(topic,),
            kafka=kafka.endpoint(),
            dlq_topic=dlq,
        ),
        record_effect,
    )
    async with running(relay, consumer):
        await eventually(lambda: _has_effects(db, 1), what="consumer handled the event")

    [record] = await read_all(kafka.endpoint(), topic, expect=1)
    headers = headers_of(record)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == ce_id
    assert headers["ce_type"] == "io.elevate.revoke.requested.v1"
    assert headers["ce_source"] == "elevate/test"
    assert headers["ce_subject"] == str(request_id)
    assert headers["content-type"] == "application/json"
    assert headers["traceparent"].startswith("00-")
    assert record.key == str(request_id).encode()
    assert data_of(record)["requested_by"]["user_name"] == "alice"
    async with db.sessions() as s:
        unsent = (
            await s.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
            )
        ).scalar_one()
    assert unsent == 0


async def _has_effects(db: Database, n: int) -> bool:
    return await effect_count(db) >= n


async def test_rows_written_while_broker_down_are_delivered_in_key_order(
    db: Database, own_kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(own_kafka.endpoint(), topic)
    own_kafka.stop()

    outbox = Outbox(source="elevate/test", topic_prefix=topic_prefix)
    keys = [uuid.uuid4() for _ in range(10)]
    for batch in range(10):
        async with db.transaction() as session:
            for i in range(100):
                n = batch * 100 + i
                key = keys[n % len(keys)]
                await outbox.add(session, revoke(key, n), subject=str(key))

    relay = OutboxRelay(db, kafka=own_kafka.endpoint(), client_id="relay-down", batch_size=200)
    retries = {"component": "kafka-relay:relay-down"}
    before = metric("elevate_retries_total", retries)
    async with running(relay):
        # The relay met the dead broker twice (tried, failed, backed off, tried again):
        # only then does "it kept the rows" say anything.
        await counted("elevate_retries_total", before + 2, retries)
        async with db.sessions() as s:
            assert (
                await s.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                )
            ).scalar_one() == 1000
        own_kafka.start()
        records = await read_all(own_kafka.endpoint(), topic, expect=1000, timeout=120)

    assert len(records) == 1000
    by_key: dict[bytes, list[int]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(int(data_of(r)["reason"].split("=")[1]))
    assert len(by_key) == 10
    for seq in by_key.values():
        assert seq == sorted(seq), "per-key order broken"
    assert sorted(n for seq in by_key.values() for n in seq) == list(range(1000))


async def test_repeated_ce_id_changes_state_once(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    dlq = f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), topic, dlq)
    request_id = uuid.uuid4()
    envelope = new_envelope(revoke(request_id), source="elevate/test", subject=str(request_id))
    value, headers = encode(envelope)
    producer = kafka.endpoint().producer()
    await producer.start()
    try:
        for _ in range(3):  # the same event, delivered three times on purpose
            await producer.send_and_wait(
                topic, value, key=str(request_id).encode(), headers=headers
            )
        marker = new_envelope(revoke(uuid.uuid4(), 99), source="elevate/test", subject="m")
        mv, mh = encode(marker)
        await producer.send_and_wait(topic, mv, key=str(request_id).encode(), headers=mh)
    finally:
        await producer.stop()

    consumer = Consumer(
        db,
        ConsumerConfig(
            name=f"{topic_prefix}c",
            topics=(topic,),
            kafka=kafka.endpoint(),
            dlq_topic=dlq,
        ),
        record_effect,
    )
    async with running(consumer):
        await eventually(lambda: _has_effect_ref(db, marker.id), what="marker handled")
    async with db.sessions() as s:
        refs = (await s.execute(select(Effect.ref))).scalars().all()
    assert sorted(refs) == sorted([envelope.id, marker.id])


async def _has_effect_ref(db: Database, ref: str) -> bool:
    async with db.sessions() as s:
        return (await s.execute(select(Effect).where(Effect.ref == ref))).first() is not None


async def test_poison_message_goes_to_dlq_and_the_next_is_handled(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    dlq = f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), topic, partitions=1)
    await create_topics(kafka.endpoint(), dlq, partitions=1)
    good = new_envelope(revoke(uuid.uuid4(), 1), source="elevate/test", subject="good")
    gv, gh = encode(good)
    failing = new_envelope(revoke(uuid.uuid4(), 666), source="elevate/test", subject="bad")
    fv, fh = encode(failing)
    producer = kafka.endpoint().producer()
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not json", key=b"k", headers=gh[:1])
        await producer.send_and_wait(topic, fv, key=b"k", headers=fh)
        await producer.send_and_wait(topic, gv, key=b"k", headers=gh)
    finally:
        await producer.stop()

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.data.get("reason") == "n=666":
            raise RuntimeError("handler bug on this event")
        await record_effect(session, envelope)

    consumer = Consumer(
        db,
        ConsumerConfig(
            name=f"{topic_prefix}c",
            topics=(topic,),
            kafka=kafka.endpoint(),
            dlq_topic=dlq,
        ),
        handler,
    )
    async with running(consumer):
        await eventually(lambda: _has_effect_ref(db, good.id), what="good message handled")

    dead = await read_all(kafka.endpoint(), dlq, expect=2)
    assert len(dead) == 2
    first, second = (headers_of(r) for r in dead)
    assert dead[0].value == b"{not json"
    assert first["dlq_origin_topic"] == topic
    assert first["dlq_origin_partition"] == "0"
    assert first["dlq_origin_offset"] == "0"
    assert "EnvelopeError" in first["dlq_error"]
    assert second["dlq_origin_offset"] == "1"
    assert "handler bug" in second["dlq_error"]
    assert second["ce_id"] == failing.id
    assert await effect_count(db) == 1


async def test_events_the_handler_does_not_want_are_passed_without_a_claim(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    """`wants` skips events before any transaction (no dedupe claim, no handler); what
    cannot be decoded is still dead-lettered, an event `wants` fails on is handled (never a
    stalled consumer), and the offsets pass all of them."""
    topic = f"{topic_prefix}elevate.requests.v1"
    dlq = f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), topic, partitions=1)
    await create_topics(kafka.endpoint(), dlq, partitions=1)
    events = [
        new_envelope(revoke(uuid.uuid4(), n), source="elevate/test", subject="s")
        for n in (1, 2, 3, 4)
    ]
    producer = kafka.endpoint().producer()
    await producer.start()
    try:
        for i, envelope in enumerate(events):
            value, headers = encode(envelope)
            if i == 1:
                await producer.send_and_wait(topic, b"{not json", key=b"k", headers=headers[:1])
            await producer.send_and_wait(topic, value, key=b"k", headers=headers)
    finally:
        await producer.stop()
    name = f"{topic_prefix}c"
    ignored_before = metric(
        "elevate_consumer_handled_total", {"consumer": name, "outcome": "ignored"}
    )
    handled: list[str] = []

    def wants(envelope: Envelope) -> bool:
        if envelope.data.get("reason") == "n=4":
            raise ValueError("a bug in the predicate")
        return bool(envelope.data.get("reason") == "n=3")

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        handled.append(envelope.id)
        await record_effect(session, envelope)

    consumer = Consumer(
        db,
        ConsumerConfig(
            name=name,
            topics=(topic,),
            kafka=kafka.endpoint(),
            dlq_topic=dlq,
            wants=wants,
        ),
        handler,
    )
    async with running(consumer):
        await eventually(lambda: _has_effect_ref(db, events[3].id), what="the last event")
    wanted = [events[2].id, events[3].id]
    assert handled == wanted
    async with db.sessions() as s:
        claimed = (
            (
                await s.execute(
                    select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == name)
                )
            )
            .scalars()
            .all()
        )
    assert sorted(claimed) == sorted(wanted)
    assert (
        metric("elevate_consumer_handled_total", {"consumer": name, "outcome": "ignored"})
        == ignored_before + 2
    )
    [dead] = await read_all(kafka.endpoint(), dlq, expect=1)
    assert dead.value == b"{not json"


async def test_unknown_event_data_is_dead_lettered_not_retried(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    dlq = f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), topic, dlq, partitions=1)
    env = new_envelope(revoke(uuid.uuid4()), source="elevate/test", subject="x")
    _value, headers = encode(env)
    bad_value = json.dumps({"request_id": "not-a-uuid"}).encode()
    producer = kafka.endpoint().producer()
    await producer.start()
    await producer.send_and_wait(topic, bad_value, key=b"x", headers=headers)
    await producer.stop()

    calls = 0

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        envelope.event()  # validation fails: an EnvelopeError, never retryable

    consumer = Consumer(
        db,
        ConsumerConfig(
            name=f"{topic_prefix}c",
            topics=(topic,),
            kafka=kafka.endpoint(),
            dlq_topic=dlq,
        ),
        handler,
    )
    async with running(consumer):
        dead = await read_all(kafka.endpoint(), dlq, expect=1)
    assert len(dead) == 1
    assert "request_id" in headers_of(dead[0])["dlq_error"]
    assert calls == 1
