"""CloudTrail in S3 (+SQS notice) and raw records on Kafka → OCSF on elevate.audit.v1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from elevate_audit_ingest.models import QuarantinedFile
from elevate_audit_ingest.ocsf import validate_ocsf
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_local.kafka import KafkaBroker
from elevate_local.simulate_activity import call_record, session_records
from sqlalchemy import select

from tests.helpers import data_of, eventually, headers_of, read_all, read_to_end
from tests.integration.audit_ingest.conftest import (
    ACCOUNT,
    PERMISSION_SET,
    Trail,
    activated,
    publish,
    publish_raw,
    running_service,
    settings_env,
    settled,
    snapshot,
)


async def test_trail_files_become_correlated_ocsf_records(
    kafka: KafkaBroker,
    pg_url: str,
    moto_endpoint: str,
    topic_prefix: str,
    topics: dict[Topics, str],
    trail: Trail,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    alice = snapshot(user="alice", start=now - timedelta(minutes=20), end=now + timedelta(hours=1))
    await publish(
        kafka.endpoint(), topics[Topics.GRANTS], activated(alice, now - timedelta(minutes=15))
    )

    # File 1: alice's CLI session, one record repeated, and mallory in the same role.
    session = session_records(
        user="alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        start=now - timedelta(minutes=10),
    )
    mallory = call_record(
        user="mallory",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        at=now - timedelta(minutes=5),
        event_source="iam.amazonaws.com",
        event_name="CreateAccessKey",
        read_only=False,
    )
    trail.deliver(
        records=[*session, session[2], mallory],
    )
    # File 2 is corrupt; file 3 (after it) must still be processed.
    bad_key = trail.deliver(
        records=[],
        body=b"\x1f\x8b\x08\x00 this is not gzip",
    )
    console = session_records(
        user="Alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        start=now - timedelta(minutes=3),
        console=True,
        calls=[("s3.amazonaws.com", "ListBuckets", True, None)],
    )
    trail.deliver(
        records=console,
    )
    # Another producer writes raw records directly: an EventBridge envelope, and then the
    # same record again unwrapped (deduplicated on eventID).
    direct = call_record(
        user="alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        at=now - timedelta(minutes=1),
        event_source="ec2.amazonaws.com",
        event_name="DescribeInstances",
    )
    envelope = {
        "version": "0",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "detail": direct,
    }
    await publish_raw(
        kafka.endpoint(),
        topics[Topics.CLOUDTRAIL],
        json.dumps(envelope).encode(),
        json.dumps(direct).encode(),
    )

    alice_ids = {r["eventID"] for r in [*session, *console, direct]}
    all_ids = alice_ids | {mallory["eventID"]}
    expected = 1 + len(all_ids)  # the 3005 Assign + one 6003 per distinct record

    db = Database(pg_url)
    env = settings_env(
        pg_url=pg_url,
        kafka=kafka,
        topic_prefix=topic_prefix,
        moto_endpoint=moto_endpoint,
        trail=trail,
    )
    try:
        async with running_service(**env):
            await eventually(
                lambda: settled(db, trail, records=len(all_ids)),
                timeout=90,
                what="all files and records processed",
            )
            records = await read_all(
                kafka.endpoint(), topics[Topics.AUDIT], expect=expected, timeout=60
            )
    finally:
        async with db.sessions() as s:
            quarantined = (await s.execute(select(QuarantinedFile))).scalars().all()
        await db.dispose()
    # Everything on the audit topic, not just the first `expected`: a duplicate would show.
    audit_rows = len(await read_to_end(kafka.endpoint(), topics[Topics.AUDIT]))

    # Exactly one OCSF record per distinct CloudTrail record (the repeat appears once).
    assert audit_rows == expected
    assert len(records) == expected
    documents = [data_of(r) for r in records]
    for document in documents:
        assert validate_ocsf(document) == document  # every record is valid OCSF 1.7
    activity = {
        d["metadata"]["original_event_uid"]: (d, r)
        for d, r in zip(documents, records, strict=True)
        if d["class_uid"] == 6003
    }
    assert set(activity) == all_ids
    for event_id in alice_ids:
        document, record = activity[event_id]
        assert document["metadata"]["correlation_uid"] == str(alice.request_id)
        assert record.key == str(alice.request_id).encode()
        assert headers_of(record)["elevate_request_id"] == str(alice.request_id)
        assert document["enrichments"][0]["data"]["justification"] == alice.justification
        assert document["severity_id"] == 1
    flagged, record = activity[mallory["eventID"]]
    assert flagged["severity_id"] == 4
    assert record.key == ACCOUNT.encode()
    assert "correlation_uid" not in flagged["metadata"]
    (assign,) = [d for d in documents if d["class_uid"] == 3005]
    assert assign["activity_id"] == 1
    assert assign["user"]["name"] == "alice"
    # The corrupt file is quarantined (kept in S3), the queue drained past it.
    assert [(q.bucket, q.key) for q in quarantined] == [(trail.bucket, bad_key)]
    assert trail.s3.head_object(Bucket=trail.bucket, Key=bad_key)["ContentLength"] > 0
