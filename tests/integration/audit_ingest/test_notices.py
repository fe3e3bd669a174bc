"""Notices handled while their files take long (moto, the real broker): the notice stays
invisible to other replicas until it is deleted, and files of several notices are read at
once — one held file does not hold the others back."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError
from elevate_audit_ingest.ingest import TrailIngestor
from elevate_audit_ingest.main import SPEC
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.kafka import KafkaBroker

from tests.harness import data_of, database, eventually, read_to_end
from tests.integration.audit_ingest.conftest import Trail
from tests.integration.audit_ingest.test_logfiles import calls

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


class HeldS3:
    """The real S3 client, but GetObject of `key` waits until released (or fails), and
    GetObject of `behind` waits until `key`'s has begun: so two reads are under way at once
    exactly when they are made in parallel, whichever the ingestor starts first."""

    def __init__(
        self, s3: S3Client, key: str, *, fail: bool = False, behind: str | None = None
    ) -> None:
        self._s3, self._key, self._fail, self._behind = s3, key, fail, behind
        self.entered = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.most_in_flight = 0  # GetObject calls under way at once, at most

    def release(self) -> None:
        self._released.set()

    def get_object(self, **kwargs: Any) -> Any:
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            if kwargs["Key"] == self._behind:
                self.entered.wait(timeout=30)  # read one at a time: never set, go on
            if kwargs["Key"] == self._key:
                self.entered.set()
                self._released.wait()
                if self._fail:
                    error = {"Error": {"Code": "InternalError", "Message": "S3 is unwell"}}
                    raise ClientError(error, "GetObject")  # type: ignore[arg-type]
            return self._s3.get_object(**kwargs)
        finally:
            with self._lock:
                self._in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


class CountingSQS:
    """The real SQS client, counting ChangeMessageVisibility calls."""

    def __init__(self, sqs: SQSClient) -> None:
        self._sqs = sqs
        self.extensions = 0

    def change_message_visibility(self, **kwargs: Any) -> Any:
        response = self._sqs.change_message_visibility(**kwargs)
        self.extensions += 1  # counted once SQS accepted it
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def ingestor(
    db: Database, kafka: KafkaBroker, topic: str, trail: Trail, s3: HeldS3, **kw: Any
) -> TrailIngestor:
    return TrailIngestor(
        db,
        s3=cast("S3Client", s3),
        sqs=cast("SQSClient", kw.pop("sqs", trail.sqs)),
        queue=trail.queue_url,
        topic=topic,
        kafka=kafka.endpoint(Principal.AUDIT_INGEST),
        sources=None,
        wait_seconds=0,
        **kw,
    )


def extenders() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("sqs-visibility:")]


async def test_a_long_file_keeps_its_notice_invisible_until_it_is_deleted(
    kafka: KafkaBroker, pg_url: str, topics: dict[Topics, str], trail: Trail
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    records = calls(3, at)
    s3 = HeldS3(trail.s3, trail.deliver(records, at=at))
    sqs = CountingSQS(trail.sqs)
    async with database(pg_url, SPEC.migrations) as db:
        trail_in = ingestor(
            db, kafka, topics[Topics.CLOUDTRAIL], trail, s3, sqs=sqs, visibility_timeout=2
        )
        poll = asyncio.create_task(trail_in.poll_once())
        try:

            async def extended() -> bool:
                return sqs.extensions >= 4

            # Four accepted extensions, one per 2/3 s: held beyond the 2 s timeout.
            await eventually(extended, timeout=60, what="the notice's visibility extended")
            other_replica = trail.sqs.receive_message(
                QueueUrl=trail.queue_url, WaitTimeSeconds=0, VisibilityTimeout=1
            )
            assert other_replica.get("Messages", []) == []
        finally:
            s3.release()
        try:
            assert await poll == 1
            assert extenders() == []  # stopped once the notice was deleted
        finally:
            await trail_in.close()
    assert trail.queued() == 0
    published = await read_to_end(kafka.endpoint(), topics[Topics.CLOUDTRAIL])
    assert sorted(data_of(r)["eventID"] for r in published) == sorted(r["eventID"] for r in records)


async def test_a_notice_that_fails_stops_being_extended_and_stays_queued(
    kafka: KafkaBroker, pg_url: str, topics: dict[Topics, str], trail: Trail
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    s3 = HeldS3(trail.s3, trail.deliver(calls(2, at), at=at), fail=True)
    s3.release()  # fails at once: S3 5xx is transient, so the notice is kept
    async with database(pg_url, SPEC.migrations) as db:
        trail_in = ingestor(db, kafka, topics[Topics.CLOUDTRAIL], trail, s3, visibility_timeout=30)
        try:
            with pytest.raises(ClientError, match="InternalError"):
                await trail_in.poll_once()
            assert extenders() == []
        finally:
            await trail_in.close()
    assert trail.queued() == 1


async def test_files_of_several_notices_are_read_at_once(
    kafka: KafkaBroker, pg_url: str, topics: dict[Topics, str], trail: Trail
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    slow, fast = calls(4, at), calls(5, at + timedelta(minutes=1))
    slow_key = trail.deliver(slow, at=at)
    s3 = HeldS3(trail.s3, slow_key, behind=trail.deliver(fast, at=at + timedelta(minutes=1)))
    topic = topics[Topics.CLOUDTRAIL]
    async with database(pg_url, SPEC.migrations) as db:
        trail_in = ingestor(db, kafka, topic, trail, s3, parallel_files=2, max_messages=10)
        poll = asyncio.create_task(trail_in.poll_once())
        try:

            async def fast_done() -> bool:
                return trail.queued() == 1

            # The other file is published and its notice deleted while this one is held.
            await eventually(fast_done, timeout=60, what="the second notice handled")
            assert s3.entered.is_set()
            during = [data_of(r)["eventID"] for r in await read_to_end(kafka.endpoint(), topic)]
            assert sorted(during) == sorted(r["eventID"] for r in fast)
        finally:
            s3.release()
        try:
            assert await poll == 2
        finally:
            await trail_in.close()
    assert s3.most_in_flight == 2
    assert trail.queued() == 0
    published = Counter(data_of(r)["eventID"] for r in await read_to_end(kafka.endpoint(), topic))
    assert published == Counter(r["eventID"] for r in slow + fast)


async def test_no_more_files_than_the_setting_are_read_at_once(
    kafka: KafkaBroker, pg_url: str, topics: dict[Topics, str], trail: Trail
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    first, second = calls(2, at), calls(3, at + timedelta(minutes=1))
    s3 = HeldS3(trail.s3, trail.deliver(first, at=at))
    trail.deliver(second, at=at + timedelta(minutes=1))
    topic = topics[Topics.CLOUDTRAIL]
    async with database(pg_url, SPEC.migrations) as db:
        trail_in = ingestor(db, kafka, topic, trail, s3, parallel_files=1, max_messages=10)
        poll = asyncio.create_task(trail_in.poll_once())
        try:

            async def held() -> bool:
                return s3.entered.is_set()

            await eventually(held, timeout=60, what="the first file being read")
            assert trail.queued() == 2  # the other notice waits for the one slot
        finally:
            s3.release()
        try:
            assert await poll == 2
        finally:
            await trail_in.close()
    assert s3.most_in_flight == 1
    published = Counter(data_of(r)["eventID"] for r in await read_to_end(kafka.endpoint(), topic))
    assert published == Counter(r["eventID"] for r in first + second)
