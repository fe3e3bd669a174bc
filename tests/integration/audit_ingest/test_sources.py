"""Only the configured buckets/prefixes are fetched: a notice naming anything else is
quarantined with the reason and its object never read (moto, the real broker, PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import pytest
from elevate_audit_ingest.ingest import aws_clients
from elevate_audit_ingest.models import QuarantinedFile
from elevate_audit_ingest.settings import AuditSettings
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_local.kafka import KafkaBroker
from elevate_local.simulate_activity import call_record, gzip_records, trail_key
from sqlalchemy import select

from tests.harness import data_of, eventually, metric, read_to_end
from tests.integration.audit_ingest.conftest import (
    ACCOUNT,
    PERMISSION_SET,
    Trail,
    running_service,
    settings_env,
)

REFUSED = "elevate_audit_sources_refused_total"


def s3_event(bucket: str, key: str) -> str:
    """An S3 event notification as S3 sends it: the key URL-encoded."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/")}},
    }
    return json.dumps({"Records": [record]})


def record(at: datetime) -> dict[str, Any]:
    return call_record(
        user="alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        at=at,
        event_source="s3.amazonaws.com",
        event_name="GetObject",
    )


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (bucket, key) the service's S3 client is asked to GetObject."""
    calls: list[tuple[str, str]] = []

    def spying(settings: AuditSettings) -> Any:
        s3, sqs = aws_clients(settings)

        def seen(params: dict[str, Any], **_: Any) -> None:
            calls.append((params["Bucket"], params["Key"]))

        s3.meta.events.register("provide-client-params.s3.GetObject", seen)
        return s3, sqs

    # main looks the factory up when it builds the trail ingestor.
    monkeypatch.setattr("elevate_audit_ingest.main.aws_clients", spying)
    return calls


async def test_only_listed_sources_are_fetched(
    kafka: KafkaBroker,
    pg_url: str,
    moto_endpoint: str,
    topic_prefix: str,
    topics: dict[Topics, str],
    trail: Trail,
    fetched: list[tuple[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # A readable CloudTrail file in a bucket the service is not told about, its notice
    # in the trail's queue (a forged notice, or a queue policy opened too wide).
    other = f"other-{uuid.uuid4().hex[:10]}"
    trail.s3.create_bucket(Bucket=other)
    foreign = record(now - timedelta(minutes=4))
    foreign_key = trail.deliver(
        bucket=other,
        records=[foreign],
    )
    # In the trail's own bucket, beside the listed prefix: AWSLogs-evil/ is not AWSLogs/.
    sibling = record(now - timedelta(minutes=3))
    sibling_key = "AWSLogs-evil/" + trail_key(ACCOUNT, "us-east-1", now).removeprefix("AWSLogs/")
    trail.s3.put_object(Bucket=trail.bucket, Key=sibling_key, Body=gzip_records([sibling]))
    trail.sqs.send_message(
        QueueUrl=trail.queue_url, MessageBody=s3_event(trail.bucket, sibling_key)
    )
    # Names longer than the quarantine's columns must not wedge the queue.
    huge = json.dumps({"s3Bucket": "b" * 300, "s3ObjectKey": ["AWSLogs/" + "k" * 1100]})
    trail.sqs.send_message(QueueUrl=trail.queue_url, MessageBody=huge)
    # The trail's genuine delivery flows as before.
    genuine = record(now - timedelta(minutes=2))
    genuine_key = trail.deliver(
        records=[genuine],
    )

    env = settings_env(
        pg_url=pg_url,
        kafka=kafka,
        topic_prefix=topic_prefix,
        moto_endpoint=moto_endpoint,
        trail=trail,
    )
    env["cloudtrail_sources"] = f"{trail.bucket}/AWSLogs"
    env["cloudtrail_visibility_timeout"] = 120  # no redelivery: each notice handled once
    before = {r: metric(REFUSED, {"reason": r}) for r in ("bucket", "prefix")}
    db = Database(pg_url)
    try:
        async with running_service(**env):

            async def drained() -> bool:
                return trail.queued() == 0

            # Kafka acknowledged every record of a notice before it is deleted.
            await eventually(drained, timeout=60, what="every notice handled and deleted")
        async with db.sessions() as session:
            rows = (await session.execute(select(QuarantinedFile))).scalars().all()
    finally:
        await db.dispose()

    published = await read_to_end(kafka.endpoint(), topics[Topics.CLOUDTRAIL])
    assert [data_of(r)["eventID"] for r in published] == [genuine["eventID"]]
    assert fetched == [(trail.bucket, genuine_key)]
    # Quarantined with the reason; the objects are still there, just never read.
    reasons = {(q.bucket, q.key): q.error for q in rows}
    assert set(reasons) == {
        (other, foreign_key),
        (trail.bucket, sibling_key),
        ("b" * 255, ("AWSLogs/" + "k" * 1100)[:1024]),
    }
    assert reasons[(other, foreign_key)] == (
        f"SourceNotAllowedError: bucket '{other}' is not listed in "
        "ELEVATE_CLOUDTRAIL_SOURCES; not fetched"
    )
    assert "is under none of the prefixes" in reasons[(trail.bucket, sibling_key)]
    assert metric(REFUSED, {"reason": "bucket"}) == before["bucket"] + 2
    assert metric(REFUSED, {"reason": "prefix"}) == before["prefix"] + 1
    assert trail.s3.head_object(Bucket=other, Key=foreign_key)["ContentLength"] > 0
    # The service logs to stdout (its own handler, so not caplog): one ERROR line each.
    errors = [
        line
        for line in capsys.readouterr().out.splitlines()
        if " ERROR " in line and "cloudtrail ingest: quarantined" in line
    ]
    assert any(
        line.endswith(f"quarantined s3://{other}/{foreign_key}: {reasons[(other, foreign_key)]}")
        for line in errors
    ), errors
    assert len(errors) == 3, errors
