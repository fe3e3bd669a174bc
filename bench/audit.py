"""audit-ingest throughput: correlation + publishing vs. merely consuming and parsing.

    uv run python bench/audit.py [--records 5000] [--database-url URL | --database-url postgres]

Starts its own Kafka broker (SQLite unless a database URL is given; `postgres` starts a
throwaway PostgreSQL cluster, as the tests do), puts N
realistic CloudTrail records of one Identity Center session on `elevate.cloudtrail.v1`,
then measures, in the same run:

1. baseline: consume the N records from Kafka and parse them (json + correlation parse);
2. pipeline: the service's own consumer (dedupe on eventID and content, grant-index lookup,
   correlation, OCSF mapping + validation, outbox row, one transaction per record) and
   its outbox relay publishing the N OCSF records to `elevate.audit.v1`.

Each rate is timed from its first record to its last, so group joins are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from elevate_audit_ingest.consumers import cloudtrail_handler, cloudtrail_key
from elevate_audit_ingest.domain import parse_record
from elevate_audit_ingest.grant_index import record_grant_event
from elevate_audit_ingest.main import SPEC
from elevate_audit_ingest.service import CorrelationConfig
from elevate_core.clock import SystemClock
from elevate_core.db import Database
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import GrantActivated, Person, RequestSnapshot
from elevate_core.kafka.admin import ensure_topics
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.relay import OutboxRelay
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster
from elevate_local.simulate_activity import call_record
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

ACCOUNT = "210987654321"
PS = "AdministratorAccess"


def make_records(n: int, start: datetime) -> list[bytes]:
    return [
        json.dumps(
            call_record(
                user="alice",
                account_id=ACCOUNT,
                permission_set=PS,
                at=start + timedelta(milliseconds=10 * i),
                event_source="s3.amazonaws.com",
                event_name="GetObject",
                request_parameters={"bucketName": "data", "key": f"obj/{i}"},
            )
        ).encode()
        for i in range(n)
    ]


async def produce(kafka: KafkaEndpoint, topic: str, values: list[bytes]) -> None:
    producer = kafka.producer(linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=ACCOUNT.encode()) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def baseline(kafka: KafkaEndpoint, topic: str, n: int) -> float:
    consumer = kafka.consumer(topic, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    seen, first = 0, 0.0
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for messages in batch.values():
                for message in messages:
                    if seen == 0:
                        first = time.perf_counter()
                    parse_record(json.loads(message.value))
                    seen += 1
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - first)


async def _index_grant(db: Database, outbox: Outbox, config: CorrelationConfig) -> None:
    """An active grant for alice in the account, so every record correlates to it."""
    now = datetime.now(UTC)
    snapshot = RequestSnapshot(
        request_id=uuid.uuid4(),
        requester=Person(user_name="alice", user_id="uid-alice"),
        account_id=ACCOUNT,
        permission_set_name=PS,
        permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
        start=now - timedelta(hours=1),
        end=now + timedelta(hours=1),
        justification="bench",
        matched_rule="bench",
        policy_version="v1",
        approvers=("bob",),
    )
    async with db.transaction() as session:
        await record_grant_event(
            session,
            event=GrantActivated(
                grant_id=uuid.uuid4(), snapshot=snapshot, activated_at=now - timedelta(hours=1)
            ),
            event_uid=str(uuid.uuid4()),
            outbox=outbox,
            config=config,
            now=now,
        )


async def _wait_until_published(db: Database, n: int) -> None:
    sent = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.isnot(None))
    while True:
        async with db.sessions() as session:
            if int((await session.execute(sent)).scalar_one()) >= n:
                return
        await asyncio.sleep(0.05)


async def pipeline(db: Database, kafka: KafkaEndpoint, prefix: str, n: int) -> float:
    outbox = Outbox(source="elevate/audit-ingest", topic_prefix=prefix)
    config = CorrelationConfig(grace=timedelta(hours=1), wait=timedelta(minutes=15))
    await _index_grant(db, outbox, config)
    inner = cloudtrail_handler(outbox=outbox, config=config, clock=SystemClock())
    started: list[float] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if not started:
            started.append(time.perf_counter())
        await inner(session, envelope)

    consumer = Consumer(
        db,
        ConsumerConfig(
            name=f"{prefix}bench",
            topics=(f"{prefix}elevate.cloudtrail.v1",),
            kafka=kafka,
            dlq_topic=f"{prefix}elevate.dlq.v1",
            raw_key=cloudtrail_key,
        ),
        handler,
    )
    relay = OutboxRelay(db, kafka=kafka, client_id="bench-relay")
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(relay.run())]
    try:
        await _wait_until_published(db, n + 1)  # + the grant's 3005
        elapsed = time.perf_counter() - started[0]
    finally:
        await consumer.stop()
        await relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    return n / elapsed


async def main_async(records: int, database_url: str | None, workdir: Path) -> None:
    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        # The whole pipeline as the broker's super user: this measures throughput, not ACLs.
        kafka = broker.endpoint()
        await ensure_topics(kafka, prefix=prefix)
        topic = f"{prefix}elevate.cloudtrail.v1"
        await produce(kafka, topic, make_records(records, datetime.now(UTC)))
        cluster = None
        if database_url == "postgres":  # a throwaway cluster of our own
            cluster = PostgresCluster(workdir / "postgres")
            cluster.start()
            database_url = cluster.create_database("bench")
        db = Database(database_url or f"sqlite+aiosqlite:///{workdir / 'audit.db'}")
        await upgrade(db, SPEC.migrations)
        consume_rate = await baseline(kafka, topic, records)
        pipeline_rate = await pipeline(db, kafka, prefix, records)
        await db.dispose()
        if cluster is not None:
            cluster.stop()
    finally:
        broker.stop()
    backend = "PostgreSQL" if database_url and "postgresql" in database_url else "SQLite"
    print(f"records: {records} (database: {backend})")
    print(f"consume + parse from Kafka:         {consume_rate:10.0f} records/s")
    print(f"correlate + OCSF + outbox + publish: {pipeline_rate:10.0f} records/s")
    print(f"ratio pipeline / consume:           {pipeline_rate / consume_rate:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="elevate-bench-") as tmp:
        asyncio.run(main_async(args.records, args.database_url, Path(tmp)))


if __name__ == "__main__":
    main()
