"""The relay never stalls: rows Kafka refuses for good are moved aside after a bounded
number of tries (dead state, DLQ copy, reason) while other keys keep flowing and per-key
order holds — on SQLite and PostgreSQL, against the real broker."""

from __future__ import annotations

import uuid

from aiokafka.admin import NewTopic
from elevate_core.db import Database
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.relay import OutboxRelay
from elevate_core.retry import RetryPolicy
from elevate_local.kafka import KafkaBroker
from sqlalchemy import select

from tests.contract.test_outbox_consumer import revoke
from tests.harness import create_topics, data_of, eventually, headers_of, read_to_end, running

FAST = RetryPolicy(base_delay=0.05, max_delay=0.3)


def _relay(db: Database, endpoint: KafkaEndpoint, prefix: str) -> OutboxRelay:
    return OutboxRelay(
        db,
        kafka=endpoint,
        client_id=f"{prefix}relay",
        dlq_topic=f"{prefix}elevate.dlq.v1",
        max_row_attempts=3,
        metadata_timeout_ms=2000,
        retry=FAST,
    )


async def _add(db: Database, prefix: str, topic: str, key: str, n: int, *, size: int = 0) -> None:
    outbox = Outbox(source="elevate/test", topic_prefix=prefix)
    async with db.transaction() as session:
        event = revoke(uuid.UUID(int=n), n)
        if size:
            await outbox.add_raw(
                session,
                topic=topic,
                key=key,
                value=b'{"padding": "' + b"x" * size + b'"}',
                headers=[("ce_id", f"big-{n}"), ("ce_type", event.ce_type)],
            )
        else:
            value = event.model_dump_json().encode()
            await outbox.add_raw(
                session, topic=topic, key=key, value=value, headers=[("ce_id", f"ev-{n}")]
            )


async def _dead(db: Database) -> list[OutboxMessage]:
    async with db.sessions() as s:
        return list(
            (await s.execute(select(OutboxMessage).where(OutboxMessage.dead_at.is_not(None))))
            .scalars()
            .all()
        )


async def _dead_count(db: Database, n: int) -> bool:
    return len(await _dead(db)) >= n


def _numbers(records: list[object], key: bytes) -> list[int]:
    return [
        int(data_of(r)["reason"][2:])
        for r in records
        if r.key == key and "reason" in data_of(r)  # type: ignore[attr-defined]
    ]


async def _check_moved_aside(
    db: Database, endpoint: KafkaEndpoint, prefix: str, refused_topic: str, error: str, n: int = 1
) -> list[object]:
    dead = await _dead(db)
    assert len(dead) == n
    assert all(row.attempts == 3 for row in dead)
    assert all(error in (row.last_error or "") for row in dead)
    copies = await read_to_end(endpoint, f"{prefix}elevate.dlq.v1")
    assert len(copies) == n
    for copy in copies:
        headers = headers_of(copy)
        assert headers["dlq_origin_topic"] == refused_topic
        assert error in headers["dlq_error"]
        assert headers["dlq_origin_outbox_id"] in {str(row.id) for row in dead}
    return copies


async def test_an_event_larger_than_kafka_allows_is_moved_aside(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), topic, f"{topic_prefix}elevate.dlq.v1", partitions=1)
    await _add(db, topic_prefix, "elevate.requests.v1", "A", 0)
    await _add(db, topic_prefix, "elevate.requests.v1", "A", 1, size=2_000_000)
    await _add(db, topic_prefix, "elevate.requests.v1", "A", 2)
    for n in range(3, 8):
        await _add(db, topic_prefix, "elevate.requests.v1", "B", n)

    async with running(_relay(db, kafka.endpoint(), topic_prefix)):
        await eventually(lambda: _dead_count(db, 1), what="the large row moved aside")
        await eventually(
            lambda: _delivered(kafka.endpoint(), topic, 7), what="the other 7 rows published"
        )
    records = await read_to_end(kafka.endpoint(), topic)
    assert _numbers(records, b"B") == [3, 4, 5, 6, 7]
    assert _numbers(records, b"A") == [0, 2]  # in order, around the one moved aside
    [copy] = await _check_moved_aside(
        db, kafka.endpoint(), topic_prefix, topic, "MessageSizeTooLargeError"
    )
    assert headers_of(copy)["dlq_value_omitted"].endswith("bytes")  # the row keeps it


async def test_a_record_the_broker_refuses_in_a_shared_batch_blocks_only_itself(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    """The broker refuses a whole produce request when one record in it is too large for
    the topic; the relay finds out which by sending the refused ones on their own."""
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), f"{topic_prefix}elevate.dlq.v1", partitions=1)
    admin = kafka.endpoint().admin()
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "20000"})])
    await admin.close()
    for n in range(0, 4):
        await _add(db, topic_prefix, "elevate.requests.v1", "B", n)
    await _add(db, topic_prefix, "elevate.requests.v1", "A", 4, size=60_000)
    for n in range(5, 9):
        await _add(db, topic_prefix, "elevate.requests.v1", "B", n)
    await _add(db, topic_prefix, "elevate.requests.v1", "A", 9)

    async with running(_relay(db, kafka.endpoint(), topic_prefix)):
        await eventually(lambda: _dead_count(db, 1), what="the refused row moved aside")
        await eventually(lambda: _delivered(kafka.endpoint(), topic, 9), what="9 rows published")
    records = await read_to_end(kafka.endpoint(), topic)
    assert sorted(set(_numbers(records, b"B"))) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert _numbers(records, b"A") == [9]
    copies = await _check_moved_aside(
        db, kafka.endpoint(), topic_prefix, topic, "MessageSizeTooLargeError"
    )
    assert headers_of(copies[0])["ce_id"] == "big-4"  # blamed on the right record


async def test_events_for_a_deleted_topic_are_moved_aside(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    gone, kept = f"{topic_prefix}elevate.gone.v1", f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), gone, kept, f"{topic_prefix}elevate.dlq.v1")
    relay = _relay(db, kafka.endpoint(), topic_prefix)
    async with running(relay):
        await _add(db, topic_prefix, "elevate.gone.v1", "X", 0)
        await eventually(lambda: _delivered(kafka.endpoint(), gone, 1), what="first publish")
        admin = kafka.endpoint().admin()
        await admin.start()
        await admin.delete_topics([gone])
        await admin.close()
        await _add(db, topic_prefix, "elevate.gone.v1", "X", 1)
        await _add(db, topic_prefix, "elevate.gone.v1", "Y", 2)
        for n in range(3, 6):
            await _add(db, topic_prefix, "elevate.requests.v1", "K", n)
        await eventually(lambda: _delivered(kafka.endpoint(), kept, 3), what="other topic flows")
        await eventually(lambda: _dead_count(db, 2), what="both rows moved aside", timeout=90)
    await _check_moved_aside(
        db, kafka.endpoint(), topic_prefix, gone, "UnknownTopicOrPartitionError", n=2
    )


async def test_events_for_a_topic_the_producer_may_not_write_are_moved_aside(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    # request-api's relay holding decisions (a forged approval, say): the broker refuses
    # them — only approval may write decisions — and the requests still flow.
    kafka.allow(topic_prefix)
    denied, allowed = f"{topic_prefix}elevate.decisions.v1", f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), denied, allowed, f"{topic_prefix}elevate.dlq.v1")
    await _add(db, topic_prefix, "elevate.decisions.v1", "A", 0)
    await _add(db, topic_prefix, "elevate.requests.v1", "A", 1)
    await _add(db, topic_prefix, "elevate.decisions.v1", "A", 2)
    await _add(db, topic_prefix, "elevate.requests.v1", "B", 3)
    async with running(_relay(db, kafka.endpoint(Principal.REQUEST_API), topic_prefix)):
        await eventually(lambda: _dead_count(db, 2), what="denied rows moved aside")
        await eventually(
            lambda: _delivered(kafka.endpoint(), allowed, 2), what="the others published"
        )
    await _check_moved_aside(
        db, kafka.endpoint(), topic_prefix, denied, "TopicAuthorizationFailedError", n=2
    )
    assert await read_to_end(kafka.endpoint(), allowed)
    assert await read_to_end(kafka.endpoint(), denied) == []


async def _delivered(endpoint: KafkaEndpoint, topic: str, n: int) -> bool:
    return len(await read_to_end(endpoint, topic)) >= n
