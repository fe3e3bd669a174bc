"""Log files streamed from S3 (moto) in small pieces onto the real broker: every record
published with the file it came from; a file cut short publishes what precedes the cut
and is quarantined — nothing before the fault is lost, the queue is not stalled."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from elevate_audit_ingest.ingest import TrailIngestor
from elevate_audit_ingest.main import SPEC
from elevate_audit_ingest.models import QuarantinedFile
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.kafka import KafkaBroker
from elevate_local.simulate_activity import call_record
from sqlalchemy import select

from tests.harness import data_of, database, eventually, read_to_end
from tests.integration.audit_ingest.conftest import ACCOUNT, PERMISSION_SET, Trail


def calls(n: int, at: datetime) -> list[dict[str, Any]]:
    return [
        call_record(
            user="alice",
            account_id=ACCOUNT,
            permission_set=PERMISSION_SET,
            at=at + timedelta(seconds=i),
            event_source="s3.amazonaws.com",
            event_name="GetObject",
            request_parameters={"key": f"k{i}"},
        )
        for i in range(n)
    ]


async def test_files_are_streamed_and_a_cut_file_keeps_what_precedes_the_cut(
    kafka: KafkaBroker, pg_url: str, topics: dict[Topics, str], trail: Trail
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    whole, cut = calls(7, at), calls(6, at)
    text = json.dumps({"Records": cut})
    fifth = json.dumps(cut[4])
    # The JSON stops halfway through the fifth record: four are complete.
    body = gzip.compress(text[: text.index(fifth) + len(fifth) // 2].encode())
    whole_key = trail.deliver(
        records=whole,
    )
    cut_key = trail.deliver(
        records=[],
        body=body,
        at=at,
    )
    async with database(pg_url, SPEC.migrations) as db:
        ingestor = TrailIngestor(
            db,
            s3=trail.s3,
            sqs=trail.sqs,
            queue=trail.queue_url,
            topic=topics[Topics.CLOUDTRAIL],
            kafka=kafka.endpoint(Principal.AUDIT_INGEST),
            sources=None,
            wait_seconds=1,
            publish_batch=3,
            read_chunk=64,  # many reads per file, records across read boundaries
        )
        task = asyncio.create_task(ingestor.run())
        try:

            async def drained() -> bool:
                return trail.queued() == 0

            await eventually(drained, timeout=60, what="both notices handled and deleted")
        finally:
            await ingestor.stop()
            await task
        async with db.sessions() as session:
            quarantined = (await session.execute(select(QuarantinedFile))).scalars().all()

    published = [data_of(r) for r in await read_to_end(kafka.endpoint(), topics[Topics.CLOUDTRAIL])]
    by_file = {
        key: [
            {k: v for k, v in p.items() if k != "elevateDelivery"}
            for p in published
            if p["elevateDelivery"] == {"s3Bucket": trail.bucket, "s3ObjectKey": key}
        ]
        for key in (whole_key, cut_key)
    }
    assert len(published) == len(whole) + 4
    assert sorted(by_file[whole_key], key=lambda r: str(r["eventID"])) == sorted(
        whole, key=lambda r: str(r["eventID"])
    )
    assert sorted(r["eventID"] for r in by_file[cut_key]) == sorted(r["eventID"] for r in cut[:4])
    (row,) = quarantined
    assert (row.bucket, row.key) == (trail.bucket, cut_key)
    assert row.error.startswith("LogFileError: log file is not JSON")
