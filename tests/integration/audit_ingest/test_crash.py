"""The service SIGKILLed in the middle of a CloudTrail file loses nothing after restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from typing import Any

from elevate_audit_ingest.main import SPEC
from elevate_audit_ingest.models import GrantRow, RecordDigest
from elevate_core.events.topics import Topics
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port
from sqlalchemy import func, select

from tests.harness import (
    data_of,
    database,
    eventually,
    outbox,
    read_all,
    read_to_end,
    spawn_service,
)
from tests.integration.audit_ingest.conftest import (
    Trail,
    alice_session,
    count,
    publish_raw,
    settings_env,
)

CALLS = [("s3.amazonaws.com", f"GetObject{n}", True, {"key": f"k{n}"}) for n in range(11)]


def start_service(settings: dict[str, Any], *, fail_points: str = "") -> subprocess.Popen[bytes]:
    overrides = {"http_port": free_port(), "cloudtrail_publish_batch": 4}
    return spawn_service(
        "elevate_audit_ingest.main",
        {**settings, **overrides, "fail_points": fail_points},
        stderr=subprocess.PIPE,
    )


async def test_sigkill_mid_file_loses_nothing(
    kafka: KafkaBroker,
    pg_url: str,
    moto_endpoint: str,
    topic_prefix: str,
    topics: dict[Topics, str],
    trail: Trail,
) -> None:
    alice, records = await alice_session(kafka, topics, CALLS)
    assert len(records) == 12  # three batches of 4
    trail.deliver(
        records=records,
    )
    settings = settings_env(
        pg_url=pg_url,
        kafka=kafka,
        topic_prefix=topic_prefix,
        moto_endpoint=moto_endpoint,
        trail=trail,
    )

    # Killed after Kafka acknowledged the 2nd batch of the file, before the notice is deleted.
    first = start_service(settings, fail_points="audit.mid_file@2")
    code = await asyncio.to_thread(first.wait, 120)
    assert code == -9, first.stderr.read().decode()[-3000:] if first.stderr else ""
    partial = await read_all(kafka.endpoint(), topics[Topics.CLOUDTRAIL], expect=8, timeout=30)
    assert len(partial) == 8  # two batches out, the third never sent
    assert trail.queued() == 1  # the notice survives the crash

    second = start_service(settings)
    try:

        async def drained() -> bool:
            return trail.queued() == 0

        await eventually(drained, timeout=90, what="notice redelivered and deleted")
        expected_ids = {r["eventID"] for r in records}
        audit = await read_all(
            kafka.endpoint(), topics[Topics.AUDIT], expect=1 + len(records), timeout=90
        )
    finally:
        second.terminate()
        await asyncio.to_thread(second.wait, 60)
    # Everything the relay ever published, not just the first 13: a duplicate would show.
    audit = await read_to_end(kafka.endpoint(), topics[Topics.AUDIT])
    async with database(pg_url, SPEC.migrations) as db:
        rows = [e for e in await outbox(db) if e.topic == topics[Topics.AUDIT]]
        claims = await count(db, select(func.count()).select_from(RecordDigest))

    documents = [data_of(r) for r in audit]
    per_record = Counter(
        d["metadata"]["original_event_uid"]
        for d in documents
        if "original_event_uid" in d["metadata"]
    )
    assert per_record == dict.fromkeys(expected_ids, 1)  # every record exactly once
    assert {
        d["metadata"]["original_event_uid"] for d in documents if d["class_uid"] == 6003
    } == expected_ids
    assert all(d["metadata"].get("correlation_uid") == str(alice.request_id) for d in documents)
    # State changed exactly once per record, although the file was read twice: one claim
    # each (records that waited for the grant went out through the outbox, the others in
    # the CloudTrail consumer's Kafka transactions; the topic above holds each once).
    assert claims == len(records)
    assert [r.data["class_uid"] for r in rows].count(3005) == 1
    # The re-read file went onto elevate.cloudtrail.v1 again (at least once): all 12 there.
    again = await read_all(kafka.endpoint(), topics[Topics.CLOUDTRAIL], expect=20, timeout=30)
    assert {data_of(r)["eventID"] for r in again} == expected_ids


async def test_sigkill_between_the_database_and_the_kafka_commit_emits_each_record_once(
    kafka: KafkaBroker,
    pg_url: str,
    moto_endpoint: str,
    topic_prefix: str,
    topics: dict[Topics, str],
    trail: Trail,
) -> None:
    """The hardest point of a batch: its claims are committed, its Kafka transaction (the
    OCSF records and the offsets) is not. After the restart the batch is read again at the
    same positions, recognised as the same delivery, and emitted exactly once."""
    alice, records = await alice_session(kafka, topics, CALLS)
    settings = settings_env(
        pg_url=pg_url,
        kafka=kafka,
        topic_prefix=topic_prefix,
        moto_endpoint=moto_endpoint,
        trail=trail,
    )
    first = start_service(settings, fail_points="consumer.between_commits@1")
    async with database(pg_url, SPEC.migrations) as db:

        async def indexed() -> bool:  # so the records correlate at once, in the transaction
            return await count(db, select(func.count()).select_from(GrantRow)) == 1

        await eventually(indexed, timeout=60, what="the grant indexed")
        await publish_raw(
            kafka.endpoint(), topics[Topics.CLOUDTRAIL], *(json.dumps(r).encode() for r in records)
        )
        code = await asyncio.to_thread(first.wait, 120)
        assert code == -9, first.stderr.read().decode()[-3000:] if first.stderr else ""
        assert await count(db, select(func.count()).select_from(RecordDigest)) > 0  # claimed
    committed = await read_to_end(kafka.endpoint(), topics[Topics.AUDIT])
    assert [d for d in map(data_of, committed) if d["class_uid"] == 6003] == []  # none yet

    second = start_service(settings)
    try:
        await read_all(kafka.endpoint(), topics[Topics.AUDIT], expect=1 + len(records), timeout=90)
    finally:
        second.terminate()
        await asyncio.to_thread(second.wait, 60)
    documents = [data_of(r) for r in await read_to_end(kafka.endpoint(), topics[Topics.AUDIT])]
    per_record = Counter(
        d["metadata"]["original_event_uid"] for d in documents if d["class_uid"] == 6003
    )
    assert per_record == dict.fromkeys((r["eventID"] for r in records), 1)
    assert all(d["metadata"].get("correlation_uid") == str(alice.request_id) for d in documents)
    async with database(pg_url, SPEC.migrations) as db:
        audit_outbox = [e for e in await outbox(db) if e.topic == topics[Topics.AUDIT]]
    # None of them waited for the grant: all went out in the consumer's Kafka transactions.
    assert [e.data["class_uid"] for e in audit_outbox] == [3005]
