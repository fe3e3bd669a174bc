"""Through the real service: access after a grant's end is flagged by session, a
cross-account copy is linked to its request, and a record reusing a genuine eventID is
kept beside it, flagged, instead of suppressing it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from elevate_audit_ingest.ocsf import validate_ocsf
from elevate_core.db import Database
from elevate_core.events.models import GrantEnded
from elevate_core.events.topics import Topics
from elevate_local.kafka import KafkaBroker
from elevate_local.simulate_activity import call_record, sign_in_record

from tests.helpers import data_of, eventually, headers_of, read_all
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

RESOURCE_OWNER = "123456789012"  # another account, whose bucket alice's call touched


def call(at: datetime, session_start: datetime, name: str = "GetObject") -> dict[str, Any]:
    return call_record(
        user="alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        at=at,
        session_start=session_start,
        event_source="s3.amazonaws.com",
        event_name=name,
    )


async def test_access_after_the_end_cross_account_copies_and_reused_event_ids(
    kafka: KafkaBroker,
    pg_url: str,
    moto_endpoint: str,
    topic_prefix: str,
    topics: dict[Topics, str],
    trail: Trail,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    end = now - timedelta(minutes=20)  # inside the default grace (PT1H) from here on
    alice = snapshot(user="alice", start=end - timedelta(minutes=30), end=end)
    grant = activated(alice, end - timedelta(minutes=30))
    ended = GrantEnded(
        grant_id=grant.grant_id,
        snapshot=alice,
        reason="expired",
        ended_at=end,
        assignment_removed=True,
    )
    await publish(kafka.endpoint(), topics[Topics.GRANTS], grant, ended)

    sign_in = sign_in_record(
        user="alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        at=end + timedelta(minutes=10),
    )
    new_session = call(end + timedelta(minutes=12), session_start=end + timedelta(minutes=10))
    old_session = call(end + timedelta(minutes=15), session_start=end - timedelta(minutes=5))
    # CloudTrail's copy for the bucket owner's trail: its own eventID, the same call.
    copy = {
        **old_session,
        "eventID": str(uuid.uuid4()),
        "recipientAccountId": RESOURCE_OWNER,
        "sharedEventID": old_session["eventID"],
    }
    key = trail.deliver(
        records=[sign_in, new_session, old_session],
    )
    trail.deliver(
        account_id=RESOURCE_OWNER,
        records=[copy],
    )
    # Written straight to the topic: the genuine call's eventID, other content.
    forged = {**old_session, "eventName": "DeleteBucket", "sourceIPAddress": "198.51.100.66"}
    await publish_raw(kafka.endpoint(), topics[Topics.CLOUDTRAIL], json.dumps(forged).encode())

    distinct = 5  # sign-in, two calls, the copy, the forged record
    expected = 2 + distinct  # 3005 Assign and Revoke, one 6003 per record
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
                lambda: settled(db, trail, records=distinct),
                timeout=90,
                what="all records processed and emitted",
            )
            records = await read_all(
                kafka.endpoint(), topics[Topics.AUDIT], expect=expected, timeout=60
            )
    finally:
        await db.dispose()

    assert len(records) == expected
    activity = [(data_of(r), r) for r in records if data_of(r)["class_uid"] == 6003]
    for document, _ in activity:
        assert validate_ocsf(document) == document
        assert document["metadata"]["correlation_uid"] == str(alice.request_id)
    by_id: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for document, record in activity:
        by_id.setdefault(document["metadata"]["original_event_uid"], []).append((document, record))

    # A sign-in after the end and a session begun after it: outlived, not covered.
    for event_id, reason in (
        (sign_in["eventID"], "sign-in-after-end"),
        (new_session["eventID"], "session-began-after-end"),
    ):
        ((document, record),) = by_id[event_id]
        assert document["severity_id"] == 4
        assert document["metadata"]["labels"] == ["elevate:outlived-grant"]
        assert headers_of(record)["elevate_outcome"] == "outlived-grant"
        assert record.key == str(alice.request_id).encode()
        outlived = next(e for e in document["enrichments"] if e["name"] == "elevate.outlived-grant")
        assert outlived["data"]["reason"] == reason
        assert outlived["data"]["window_end"] == end.isoformat()
        assert document["metadata"]["log_source"] == f"s3://{trail.bucket}/{key}"

    # The session begun before the end, inside the grace: covered; so is the owner's copy.
    ((copied, _),) = by_id[copy["eventID"]]
    assert "elevate:grant" in copied["metadata"]["labels"]
    assert copied["severity_id"] == 1
    assert copied["cloud"]["account"]["uid"] == RESOURCE_OWNER

    # The genuine call and the forged one: both kept, told apart, the conflict flagged.
    pair = by_id[old_session["eventID"]]
    operations = {d["api"]["operation"]: d for d, _ in pair}
    assert set(operations) == {"GetObject", "DeleteBucket"}
    assert (
        operations["GetObject"]["metadata"]["uid"] != operations["DeleteBucket"]["metadata"]["uid"]
    )
    assert all("elevate:grant" in d["metadata"]["labels"] for d, _ in pair)
    assert any("elevate:event-id-conflict" in d["metadata"]["labels"] for d, _ in pair)
    assert operations["GetObject"]["metadata"]["log_source"] == f"s3://{trail.bucket}/{key}"
    assert operations["DeleteBucket"]["metadata"]["log_source"] == "kafka"
