"""audit-ingest's memory for one CloudTrail log file: a large file vs. a small one.

    uv run python bench/audit_logfile.py [--small 2000] [--large 200000]

Starts its own Kafka broker and moto (in its own process, so that moto holding the whole
object is not counted) and a SQLite database, writes two `.json.gz` log files of
realistic records to S3 and has the service's TrailIngestor ingest each from its SQS
notice onto `elevate.cloudtrail.v1`. Prints, in the same run, tracemalloc's peak above
what was held before for each file (the small one is the baseline), their ratio, and the
rate. Issue 21: the ratio stays near 1 whatever the large file's size.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from elevate_audit_ingest.ingest import TrailIngestor
from elevate_audit_ingest.main import SPEC
from elevate_core.db import Database
from elevate_core.kafka.admin import ensure_topics
from elevate_core.migrate import upgrade
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port, wait_for_port
from elevate_local.simulate_activity import call_record, sns_notice, trail_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

ACCOUNT = "210987654321"


def log_file(n: int) -> bytes:
    """n distinct records, written one by one: the bench never holds them all."""
    start = datetime.now(UTC) - timedelta(hours=1)
    template = call_record(
        user="alice",
        account_id=ACCOUNT,
        permission_set="AdministratorAccess",
        at=start,
        event_source="s3.amazonaws.com",
        event_name="GetObject",
        request_parameters={"bucketName": "data", "key": "obj/0"},
    )
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz:
        gz.write(b'{"Records":[')
        for i in range(n):
            record = {
                **template,
                "eventID": str(uuid.uuid4()),
                "eventTime": (start + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "requestParameters": {"bucketName": "data", "key": f"obj/{i}"},
            }
            gz.write((b"," if i else b"") + json.dumps(record).encode())
        gz.write(b"]}")
    return out.getvalue()


def aws(port: int) -> tuple[S3Client, SQSClient, str, str]:
    session = boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="x"
    )
    url = f"http://127.0.0.1:{port}"
    s3, sqs = session.client("s3", endpoint_url=url), session.client("sqs", endpoint_url=url)
    s3.create_bucket(Bucket="bench-trail")
    queue = sqs.create_queue(QueueName="bench-notices")["QueueUrl"]
    return s3, sqs, "bench-trail", queue


async def measure(
    ingestor: TrailIngestor, s3: S3Client, sqs: SQSClient, queue: str, body: bytes
) -> tuple[int, float]:
    """(peak bytes above the start, seconds) for ingesting one file."""
    key = trail_key(ACCOUNT, "us-east-1", datetime.now(UTC))
    s3.put_object(Bucket="bench-trail", Key=key, Body=body)
    sqs.send_message(QueueUrl=queue, MessageBody=sns_notice("bench-trail", [key]))
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    handled = await ingestor.poll_once()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    assert handled == 1, "the notice was not handled"
    return peak - before, elapsed


async def run(small: int, large: int, workdir: Path, moto_port: int) -> None:
    s3, sqs, _, queue = aws(moto_port)
    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        kafka = broker.endpoint()  # the broker's super user: this measures memory, not ACLs
        await ensure_topics(kafka, prefix=prefix)
        db = Database(f"sqlite+aiosqlite:///{workdir / 'audit.db'}")
        await upgrade(db, SPEC.migrations)
        ingestor = TrailIngestor(
            db,
            s3=s3,
            sqs=sqs,
            queue=queue,
            topic=f"{prefix}elevate.cloudtrail.v1",
            kafka=kafka,
            sources=None,
            wait_seconds=1,
        )
        files = {n: log_file(n) for n in (50, small, large)}
        tracemalloc.start()
        try:
            await measure(ingestor, s3, sqs, queue, files[50])  # producer, clients, threads
            small_peak, small_s = await measure(ingestor, s3, sqs, queue, files[small])
            large_peak, large_s = await measure(ingestor, s3, sqs, queue, files[large])
        finally:
            tracemalloc.stop()
            await ingestor.close()
            await db.dispose()
    finally:
        broker.stop()
    mib = 1 << 20
    print(
        f"{small:>8} records ({len(files[small]) / mib:6.1f} MiB gzip): "
        f"peak {small_peak / mib:6.1f} MiB, {small / small_s:8.0f} records/s (tracemalloc on)"
    )
    print(
        f"{large:>8} records ({len(files[large]) / mib:6.1f} MiB gzip): "
        f"peak {large_peak / mib:6.1f} MiB, {large / large_s:8.0f} records/s (tracemalloc on)"
    )
    print(f"ratio peak large / small: {large_peak / small_peak:.2f} (records {large / small:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=200_000)
    args = parser.parse_args()
    port = free_port()
    moto = subprocess.Popen(  # its own process: its memory is S3's, not ours
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60, what="moto")
        with tempfile.TemporaryDirectory(prefix="elevate-bench-") as tmp:
            asyncio.run(run(args.small, args.large, Path(tmp), port))
    finally:
        moto.terminate()
        moto.wait(30)


if __name__ == "__main__":
    main()
