"""The outbox backlog gauges show the real backlog, on SQLite and PostgreSQL: rows waiting
while Kafka is away (not the moved-aside ones), the age of the oldest, and zero once drained."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from elevate_core.db import Database, utcnow
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.relay import OutboxRelay
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port
from prometheus_client import REGISTRY
from sqlalchemy import update

from tests.helpers import create_topics, eventually, read_all

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ALICE = Person(user_name="alice", user_id="u-alice")


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


@asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 30)


async def test_the_pending_gauge_shows_the_backlog_while_kafka_is_away(
    db: Database, database_url: str, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(kafka.endpoint(), topic)
    outbox = Outbox(source="elevate/test", topic_prefix=topic_prefix)
    async with db.transaction() as s:
        for n in range(6):
            event = RevokeRequested(request_id=uuid.uuid4(), requested_by=ALICE, reason=str(n))
            await outbox.add(s, event, subject=f"k{n}")
    async with db.transaction() as s:  # one waits for an hour; one was moved aside
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.key == "k0")
            .values(created_at=utcnow() - HOUR)
        )
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.key == "k5")
            .values(created_at=utcnow() - DAY, dead_at=utcnow())
        )

    # The relay that cannot reach Kafka runs as if in a process of its own.
    other = Database(database_url)
    away = OutboxRelay(other, kafka=KafkaEndpoint(f"127.0.0.1:{free_port()}"), client_id="away")
    async with running(away):

        async def backlog_shown() -> bool:
            return gauge("elevate_outbox_pending") == 5

        await eventually(backlog_shown, what="the backlog of 5 shown")
        assert gauge("elevate_outbox_oldest_unsent_seconds") >= 3600
    await other.dispose()

    back = OutboxRelay(db, kafka=kafka.endpoint(), client_id="back")
    async with running(back):

        async def drained() -> bool:
            return gauge("elevate_outbox_pending") == 0

        await eventually(drained, what="the backlog drained")
    assert gauge("elevate_outbox_oldest_unsent_seconds") == 0
    assert len(await read_all(kafka.endpoint(), topic, expect=5)) == 5
