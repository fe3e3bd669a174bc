"""Kafka refuses the CloudTrail consumer's transactions for a while (its transactional-id
ACLs gone): the batch's claims are committed, its OCSF records are not; once the ACLs are
back the consumer, restarted from the committed offset, emits every record exactly once."""

from __future__ import annotations

import json
from collections import Counter

from elevate_audit_ingest.models import GrantRow, RecordDigest
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_local.kafka import KafkaBroker
from elevate_local.kafka_admin import AclEntry
from sqlalchemy import func, select

from tests.harness import data_of, eventually, read_all, read_to_end
from tests.integration.audit_ingest.conftest import (
    Trail,
    alice_session,
    count,
    publish_raw,
    running_service,
    settings_env,
)

CALLS = [("s3.amazonaws.com", f"GetObject{n}", True, {"key": f"k{n}"}) for n in range(7)]


def refuse_transactions(kafka: KafkaBroker, prefix: str) -> None:
    """Every ACL the broker should hold but audit-ingest's transactional ids under `prefix`."""
    kept = [
        AclEntry.of(g)
        for g in kafka._wanted()
        if not (g.resource == "TRANSACTIONAL_ID" and g.name.startswith(prefix))
    ]
    kafka._admin().apply(kept, only=True)


async def test_refused_transactions_hold_the_records_back_until_kafka_takes_them(
    kafka: KafkaBroker,
    pg_url: str,
    moto_endpoint: str,
    topic_prefix: str,
    topics: dict[Topics, str],
    trail: Trail,
) -> None:
    alice, records = await alice_session(kafka, topics, CALLS)
    env = settings_env(
        pg_url=pg_url,
        kafka=kafka,
        topic_prefix=topic_prefix,
        moto_endpoint=moto_endpoint,
        trail=trail,
    )
    db = Database(pg_url)
    try:
        async with running_service(**env):

            async def indexed() -> bool:
                return await count(db, select(func.count()).select_from(GrantRow)) == 1

            await eventually(indexed, timeout=60, what="the grant indexed")
            refuse_transactions(kafka, topic_prefix)
            try:
                await publish_raw(
                    kafka.endpoint(),
                    topics[Topics.CLOUDTRAIL],
                    *(json.dumps(r).encode() for r in records),
                )

                async def claimed() -> bool:
                    claims = select(func.count()).select_from(RecordDigest)
                    return await count(db, claims) == len(records)

                await eventually(claimed, timeout=60, what="the batch's claims committed")
                held = [
                    data_of(r) for r in await read_to_end(kafka.endpoint(), topics[Topics.AUDIT])
                ]
                assert [d for d in held if d["class_uid"] == 6003] == []  # Kafka took none
            finally:
                kafka.reconcile()  # the table's ACLs again
            await read_all(
                kafka.endpoint(), topics[Topics.AUDIT], expect=1 + len(records), timeout=90
            )
    finally:
        await db.dispose()
    documents = [data_of(r) for r in await read_to_end(kafka.endpoint(), topics[Topics.AUDIT])]
    per_record = Counter(
        d["metadata"]["original_event_uid"] for d in documents if d["class_uid"] == 6003
    )
    assert per_record == dict.fromkeys((r["eventID"] for r in records), 1)
    assert {d["metadata"].get("correlation_uid") for d in documents} == {str(alice.request_id)}
