"""Memory stays bounded whatever a log file's size: a 20,000-record file goes from S3 to
the broker with about the peak memory of a 2,000-record one (issue 21; the 200,000-record
figure is bench/audit_logfile.py's).

moto runs in its own process here: in this one, tracemalloc would count moto holding
and serving the whole object, which is S3's memory, not audit-ingest's."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elevate_audit_ingest.ingest import TrailIngestor
from elevate_audit_ingest.main import SPEC
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port, wait_for_port
from elevate_local.simulate_activity import gzip_records

from tests.harness import database, end_offsets
from tests.integration.audit_ingest.conftest import Trail
from tests.integration.audit_ingest.test_logfiles import calls

SMALL, LARGE = 2_000, 20_000


@pytest.fixture
def own_moto() -> Iterator[Trail]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60, what="moto")
        url = f"http://127.0.0.1:{port}"
        yield Trail.create(url, key_id="testing", secret="x")
    finally:
        server.terminate()
        server.wait(30)


def file_of(n: int) -> tuple[list[dict[str, Any]], bytes]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    records = calls(n, at)
    return records, gzip_records(records)


async def ingested_peak(ingestor: TrailIngestor, trail: Trail, body: bytes) -> int:
    """Peak memory above what was held before, while the one file is ingested."""
    trail.deliver(
        records=[],
        body=body,
    )
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    assert await ingestor.poll_once() == 1
    _, peak = tracemalloc.get_traced_memory()
    return peak - before


async def test_a_ten_times_larger_file_needs_no_more_memory(
    kafka: KafkaBroker, pg_url: str, topics: dict[Topics, str], own_moto: Trail
) -> None:
    topic = topics[Topics.CLOUDTRAIL]
    (_, warm), (_, small), (large_records, large) = file_of(50), file_of(SMALL), file_of(LARGE)
    assert len(large) > 1 << 20  # several 1 MiB reads; ~25 MB decompressed
    async with database(pg_url, SPEC.migrations) as db:
        ingestor = TrailIngestor(
            db,
            s3=own_moto.s3,
            sqs=own_moto.sqs,
            queue=own_moto.queue_url,
            topic=topic,
            kafka=kafka.endpoint(Principal.AUDIT_INGEST),
            sources=None,
            wait_seconds=1,
        )
        tracemalloc.start()
        try:
            await ingested_peak(ingestor, own_moto, warm)  # producer, clients, threads
            small_peak = await ingested_peak(ingestor, own_moto, small)
            large_peak = await ingested_peak(ingestor, own_moto, large)
        finally:
            tracemalloc.stop()
            await ingestor.close()
    ends = await end_offsets(kafka.endpoint(), topic)
    assert sum(ends.values()) == 50 + SMALL + len(large_records)
    assert large_peak / small_peak < 2, (small_peak, large_peak)
