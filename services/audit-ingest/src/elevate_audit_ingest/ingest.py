"""CloudTrail delivery → `elevate.cloudtrail.v1`: an SQS poller (a worker).

For each notice: stream each `.json.gz` (read, decompressed and parsed chunk by chunk, so
memory is bounded whatever the file's size), publish one message per record (key =
account id) with the idempotent producer, and delete the SQS message only after Kafka
acknowledged every record. A crash before the delete means SQS redelivers the notice after
the visibility timeout and the file is published again; the consumer deduplicates on
`eventID` and content, so nothing is lost and nothing is emitted twice. Each record
carries where it was read (`elevateDelivery`: bucket and key) into its OCSF record.

The notices of one receive are handled concurrently, at most `parallel_files` files being
read at once (each still bounded in memory). While a notice is handled its visibility is
extended (ChangeMessageVisibility, every third of the timeout), so a long file never
reappears to another replica midway; the extending stops once the notice is deleted or its
handling failed — a failed notice reappears after the visibility timeout.

Only objects within `ELEVATE_CLOUDTRAIL_SOURCES` are fetched (sources.py): a notice naming
another bucket, a key outside the listed prefixes or a key with a `..` segment is
quarantined as below, counted in `elevate_audit_sources_refused_total`, and never fetched.

A malformed notice or an unreadable file (missing object, not gzip/JSON, no `Records`) is
quarantined — a row in `audit_quarantined_files`, a counter, an error log with its key; the
object stays in S3 — and the rest of the notice carries on; records read before a fault in
a file are published (acknowledged) first. Transient failures (S3 5xx, throttling, Kafka
away) leave the message on the queue to be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from elevate_core.clock import Clock, SystemClock
from elevate_core.db import Database
from elevate_core.failpoints import failpoint
from elevate_core.health import health
from elevate_core.kafka.producer import LazyProducer, idempotent_producer
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.retry import DEFAULT_POLICY, Retrying
from sqlalchemy import select

from elevate_audit_ingest.domain import DELIVERY_FIELD, RecordError, parse_time
from elevate_audit_ingest.logfile import LogFileReader
from elevate_audit_ingest.models import QuarantinedFile
from elevate_audit_ingest.schemas import (
    LogFileError,
    NoticeError,
    ObjectRef,
    is_log_file,
    parse_notice,
)
from elevate_audit_ingest.service import LAG, QUARANTINED, RECORDS_IN, RECORDS_OUT, REFUSED
from elevate_audit_ingest.settings import AuditSettings
from elevate_audit_ingest.sources import Source, SourceNotAllowedError, refusal

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)
# An object that is not there or not ours to read: retrying the notice cannot help.
_PERMANENT_S3_ERRORS = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidObjectState", "404"}


def aws_clients(settings: AuditSettings) -> tuple[S3Client, SQSClient]:
    session = boto3.session.Session(
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
    )
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    s3 = session.client("s3", endpoint_url=settings.aws_endpoint_url, config=config)
    sqs = session.client("sqs", endpoint_url=settings.aws_endpoint_url, config=config)
    return s3, sqs


class TrailIngestor:
    def __init__(
        self,
        db: Database,
        *,
        s3: S3Client,
        sqs: SQSClient,
        queue: str,
        topic: str,
        kafka: KafkaEndpoint,
        sources: Sequence[Source] | None,
        client_id: str = "audit-ingest-trail",
        wait_seconds: int = 20,
        visibility_timeout: int = 300,
        max_messages: int = 10,
        parallel_files: int = 4,
        publish_batch: int = 500,
        read_chunk: int = 1 << 20,
        clock: Clock | None = None,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.db = db
        self.s3 = s3
        self.sqs = sqs
        self.queue = queue
        self.topic = topic
        # None: any bucket (dev/test without ELEVATE_CLOUDTRAIL_SOURCES); () refuses all.
        self.sources = None if sources is None else tuple(sources)
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.max_messages = max_messages
        self._files = asyncio.Semaphore(parallel_files)  # files being read at once
        self.publish_batch = publish_batch
        self.read_chunk = read_chunk  # compressed bytes read from S3 at a time
        self.clock = clock or SystemClock()
        self._producer_factory = producer_factory or (
            lambda: idempotent_producer(kafka, client_id=client_id)
        )
        self._producer = LazyProducer(self._producer_factory)
        self._queue_url: str | None = queue if queue.startswith(("http://", "https://")) else None
        self._stopping = asyncio.Event()

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Close the producer (run() does so itself; for callers of poll_once)."""
        await self._producer.close()

    async def run(self) -> None:
        retrying = Retrying(DEFAULT_POLICY, component="cloudtrail-ingest", what="polling")
        try:
            while not self._stopping.is_set():
                try:
                    await self.poll_once()
                    retrying.succeeded()
                    health.ok("cloudtrail-ingest", "polling")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    decision = retrying.failed_outside_work(exc)
                    health.failing("cloudtrail-ingest", decision.reason)
                    log.warning(
                        "cloudtrail ingest: %s; retry %d", decision.reason, retrying.attempt
                    )
                    await self._producer.close()
                    await DEFAULT_POLICY.wait(decision, self._stopping)
        finally:
            await self._producer.close()

    async def queue_url(self) -> str:
        if self._queue_url is None:
            response = await asyncio.to_thread(self.sqs.get_queue_url, QueueName=self.queue)
            self._queue_url = response["QueueUrl"]
        return self._queue_url

    async def poll_once(self) -> int:
        """Receive one batch of notices and handle each; returns how many were deleted."""
        url = await self.queue_url()
        response = await asyncio.to_thread(
            self.sqs.receive_message,
            QueueUrl=url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
        )
        messages = response.get("Messages", [])
        results = await asyncio.gather(
            *(self._settle(url, m) for m in messages), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for extra in failures[1:]:
            log.warning("cloudtrail ingest: another notice failed too: %s", extra)
        if failures:
            raise failures[0]  # run() backs off; the failed notices reappear
        return sum(1 for r in results if r is True)

    async def _settle(self, url: str, message: Any) -> bool:
        """Handle one notice, kept invisible meanwhile; True once it is deleted."""
        if self._stopping.is_set():
            return False  # left on the queue: redelivered after the visibility timeout
        handle = message["ReceiptHandle"]
        async with self._kept_invisible(url, handle, str(message.get("MessageId", ""))):
            await self.handle_message(message)
            await asyncio.to_thread(self.sqs.delete_message, QueueUrl=url, ReceiptHandle=handle)
        return True

    @contextlib.asynccontextmanager
    async def _kept_invisible(self, url: str, handle: str, message_id: str) -> AsyncIterator[None]:
        extender = asyncio.create_task(
            self._extend_visibility(url, handle, message_id), name=f"sqs-visibility:{message_id}"
        )
        try:
            yield
        finally:
            extender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await extender

    async def _extend_visibility(self, url: str, handle: str, message_id: str) -> None:
        # A third of the timeout: two more chances if one extension is slow or fails.
        interval = self.visibility_timeout / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(
                    self.sqs.change_message_visibility,
                    QueueUrl=url,
                    ReceiptHandle=handle,
                    VisibilityTimeout=self.visibility_timeout,
                )
            except (ClientError, BotoCoreError) as exc:
                # Not fatal: at worst another replica reads the file too (deduplicated).
                log.warning("cloudtrail ingest: extending notice %s failed: %s", message_id, exc)

    async def handle_message(self, message: Any) -> None:
        """Publish every record the notice announces; raise to leave it on the queue."""
        message_id = str(message.get("MessageId", ""))
        try:
            refs = parse_notice(str(message.get("Body", "")))
        except NoticeError as exc:
            await self.quarantine(ObjectRef("", f"sqs-message:{message_id}"), exc, message_id)
            return
        for ref in refs:
            await self.handle_object(ref, message_id)

    async def handle_object(self, ref: ObjectRef, message_id: str) -> None:
        """Fetch one object the notice names and publish its records — if it is ours."""
        reason = None if self.sources is None else refusal(self.sources, ref)
        if reason is not None:
            REFUSED.labels(reason.value).inc()
            await self.quarantine(ref, SourceNotAllowedError(reason, ref), message_id)
            return
        if not is_log_file(ref.key):
            log.info("cloudtrail ingest: skipping s3://%s/%s: not a log file", ref.bucket, ref.key)
            return
        async with self._files:
            await self._read_object(ref, message_id)

    async def _read_object(self, ref: ObjectRef, message_id: str) -> None:
        try:
            # aclosing: the S3 body is closed at once, also when publishing fails midway.
            async with contextlib.aclosing(self._records(ref)) as records:
                sent = await self.publish(records, ref)
        except LogFileError as exc:
            # What came before the fault is published (and acknowledged): kept, not lost.
            await self.quarantine(ref, exc, message_id)
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in _PERMANENT_S3_ERRORS:
                raise
            await self.quarantine(ref, exc, message_id)
            return
        log.debug("cloudtrail ingest: s3://%s/%s: %d records", ref.bucket, ref.key, sent)

    async def _records(self, ref: ObjectRef) -> AsyncGenerator[dict[str, Any]]:
        """The file's records as they are read: decompressed and parsed chunk by chunk."""
        response = await asyncio.to_thread(self.s3.get_object, Bucket=ref.bucket, Key=ref.key)
        body = response["Body"]
        reader = LogFileReader()
        try:
            while True:
                chunk = await asyncio.to_thread(body.read, self.read_chunk)
                for record in reader.feed(chunk):
                    yield record
                if not chunk:
                    return
        finally:
            body.close()

    async def publish(self, records: AsyncIterator[dict[str, Any]], ref: ObjectRef) -> int:
        """Send the records in batches of `publish_batch`, each acknowledged before the next
        is read: what is held is one batch, whatever the file's size."""
        producer = await self._producer.get()
        # Overwrites whatever a file may claim: where it was read is the ingestor's to say.
        delivery = {"s3Bucket": ref.bucket, "s3ObjectKey": ref.key}
        batch: list[tuple[Any, Any]] = []  # (send future, eventTime)
        sent = 0
        try:
            async for record in records:
                if not isinstance(record.get("eventID"), str):
                    log.warning("cloudtrail ingest: record without eventID in %s skipped", ref.key)
                    continue
                account = record.get("recipientAccountId") or (
                    record.get("userIdentity") or {}
                ).get("accountId")
                future = await producer.send(
                    self.topic,
                    value=json.dumps(
                        {**record, DELIVERY_FIELD: delivery}, separators=(",", ":")
                    ).encode(),
                    key=str(account).encode() if account else None,
                    headers=[("content-type", b"application/json")],
                )
                batch.append((future, record.get("eventTime")))
                if len(batch) >= self.publish_batch:
                    sent += await self._acknowledged(batch)
                    batch = []
        except LogFileError:
            await self._acknowledged(batch)  # before the file is quarantined
            raise
        return sent + await self._acknowledged(batch)

    async def _acknowledged(self, batch: list[tuple[Any, Any]]) -> int:
        if not batch:
            return 0
        await asyncio.gather(*(future for future, _ in batch))
        now = self.clock.now()
        for _, value in batch:
            with contextlib.suppress(RecordError):
                LAG.labels("cloudtrail").observe(
                    max(0.0, (now - parse_time(value)).total_seconds())
                )
        RECORDS_IN.labels("s3").inc(len(batch))
        RECORDS_OUT.labels(self.topic, "cloudtrail").inc(len(batch))
        failpoint("audit.mid_file")  # crash test: part of a file published, notice kept
        return len(batch)

    async def quarantine(self, ref: ObjectRef, error: Exception, message_id: str) -> None:
        detail = f"{type(error).__name__}: {error}"[:2000]
        # A forged notice may name more than S3 allows; a row the database refuses would
        # leave the notice on the queue for ever, so cut to the columns' sizes.
        bucket, key = ref.bucket[:255], ref.key[:1024]
        async with self.db.transaction() as session:
            known = (
                await session.execute(
                    select(QuarantinedFile.id).where(
                        QuarantinedFile.bucket == bucket, QuarantinedFile.key == key
                    )
                )
            ).first()
            if known is None:
                session.add(
                    QuarantinedFile(
                        bucket=bucket,
                        key=key,
                        error=detail,
                        message_id=message_id or None,
                        quarantined_at=self.clock.now(),
                    )
                )
        if known is None:
            QUARANTINED.inc()
        log.error("cloudtrail ingest: quarantined s3://%s/%s: %s", ref.bucket, ref.key, detail)
