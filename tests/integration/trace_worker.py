"""Producer and consumer processes for the cross-process tracing test.

python -m tests.integration.trace_worker produce DB_URL PREFIX OTLP
python -m tests.integration.trace_worker consume DB_URL PREFIX OTLP

Kafka: the `ELEVATE_KAFKA_*` settings the parent passes.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from elevate_core.db import Database
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox
from elevate_core.relay import OutboxRelay
from elevate_core.telemetry import configure_tracing, shutdown_tracing, tracer
from sqlalchemy.ext.asyncio import AsyncSession

from tests.harness import kafka_from_env


async def produce(url: str, endpoint: KafkaEndpoint, prefix: str) -> None:
    db = Database(url)
    await upgrade(db)
    outbox = Outbox(source="elevate/trace-producer", topic_prefix=prefix)
    request_id = uuid.uuid4()
    with tracer().start_as_current_span("POST /v1/requests/{id}/revoke"):
        async with db.transaction() as session:
            await outbox.add(
                session,
                RevokeRequested(
                    request_id=request_id, requested_by=Person(user_name="alice", user_id="u")
                ),
                subject=str(request_id),
            )
    relay = OutboxRelay(db, kafka=endpoint, client_id="trace-producer")
    while await relay.publish_once() == 0:
        await asyncio.sleep(0.1)
    await relay.close()


async def consume(url: str, endpoint: KafkaEndpoint, prefix: str) -> None:
    db = Database(url)
    await upgrade(db)
    done = asyncio.Event()

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        with tracer().start_as_current_span("revoke grant"):
            done.set()

    consumer = Consumer(
        db,
        ConsumerConfig(
            name="trace-consumer",
            topics=(f"{prefix}elevate.requests.v1",),
            kafka=endpoint,
            dlq_topic=f"{prefix}elevate.dlq.v1",
        ),
        handler,
    )
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(done.wait(), 120)
    await consumer.stop()
    await task


def main() -> None:
    cmd, url, prefix, otlp = sys.argv[1:5]
    endpoint = kafka_from_env()
    configure_tracing(service=f"trace-{cmd}", otlp_endpoint=otlp)
    asyncio.run((produce if cmd == "produce" else consume)(url, endpoint, prefix))
    shutdown_tracing()  # flushes the batch exporter


if __name__ == "__main__":
    main()
