"""Idempotent consumer (ARCHITECTURE.md §3).

Each message is handled inside one database transaction that also records its
`ce_id` (a repeat is a no-op); offsets are committed only afterwards. What happens when
handling fails is decided by the one retry policy (`elevate_core.retry`): a transient
failure (our database away, a deadlock, throttling) is retried with bounded backoff until
it succeeds or the process stops — never dead-lettered, since the message is fine; a
permanent one (undecodable, wrong data, a bug) goes to the dead-letter topic at once with
its origin and reason in headers, and the consumer carries on with the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError
from opentelemetry import trace
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_core.causes import caused_by
from elevate_core.db import Database
from elevate_core.errors import ShuttingDownError
from elevate_core.events.base import is_security_relevant
from elevate_core.events.envelope import (
    Envelope,
    EnvelopeError,
    decode,
    parse_json_object,
)
from elevate_core.events.signing import SignatureError, Verifier, check_signature
from elevate_core.events.topics import Topics
from elevate_core.health import health
from elevate_core.kafka.dedupe import claim_event
from elevate_core.kafka.producer import idempotent_producer
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.retry import DEFAULT_POLICY, Decision, Retrying, RetryPolicy, describe
from elevate_core.telemetry import context_from, request_id_var, tracer

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
RawKey = Callable[[dict[str, Any]], str | None]
Committed = Callable[[TopicPartition, int], None]  # a partition's next offset, committed
# Whether the handler has anything to do with an event (a pure function of the envelope).
Wants = Callable[[Envelope], bool]

HANDLED = Counter("elevate_consumer_handled_total", "Messages handled", ["consumer", "outcome"])
DEAD_LETTERED = Counter("elevate_dlq_published_total", "Messages sent to the DLQ", ["consumer"])
SECURITY_DEAD_LETTERED = Counter(
    "elevate_dlq_security_relevant_total",
    "Security-relevant events (revokes, cancels, approvals, grant ends…) sent to the DLQ: "
    "alert on any increase",
    ["consumer", "type"],
)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    name: str  # also the dedupe namespace and the default group id
    topics: tuple[str, ...]
    kafka: KafkaEndpoint
    dlq_topic: str
    group_id: str | None = None
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    auto_offset_reset: str = "earliest"
    raw_key: RawKey | None = None  # raw mode: no CloudEvents headers, dedupe on this key
    # Topics (as subscribed) whose events must carry their writer's signature, and the keys
    # to check it with; with no verifier every event of those topics is refused.
    signed: Mapping[str, Topics] = field(default_factory=dict)
    verifier: Verifier | None = None
    max_records: int = 200  # per fetch: a partition's batch is handled in one transaction
    # Events the handler would return from untouched are skipped after their envelope and
    # signature are checked (a forgery is still dead-lettered), without a transaction: on
    # SQLite every transaction takes the one write lock the service's other writers wait for.
    wants: Wants | None = None
    max_partition_fetch_bytes: int = 1 << 20


class Consumer:
    def __init__(
        self,
        db: Database,
        config: ConsumerConfig,
        handler: Handler,
        *,
        retry: RetryPolicy = DEFAULT_POLICY,
        on_committed: Committed | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.handler = handler
        self.retry = retry
        self.on_committed = on_committed  # after each offset commit (progress watchers)
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq_producer: Any = None
        self._component = f"consumer:{config.name}"

    async def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        retrying = Retrying(self.retry, component=self._component, what="the connection")
        try:
            while not self._stopping.is_set():
                try:
                    await self._start()
                    retrying.succeeded()
                    await self._loop()
                except asyncio.CancelledError:
                    raise
                except ShuttingDownError:
                    break
                except Exception as exc:
                    # Outside any message (broker away, group trouble): always try again.
                    decision = retrying.failed_outside_work(exc)
                    health.failing(self._component, decision.reason)
                    log.warning(
                        "consumer %s: %s; retry %d",
                        self.config.name,
                        decision.reason,
                        retrying.attempt,
                    )
                    await self._close()
                    await self.retry.wait(decision, self._stopping)
        finally:
            await self._close()

    async def _start(self) -> None:
        if self._consumer is not None:
            return
        consumer = self.config.kafka.consumer(
            *self.config.topics,
            group_id=self.config.group_id or self.config.name,
            client_id=self.config.name,
            enable_auto_commit=False,
            auto_offset_reset=self.config.auto_offset_reset,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            isolation_level="read_committed",
            max_partition_fetch_bytes=self.config.max_partition_fetch_bytes,
        )
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        self._consumer = consumer
        health.ok(self._component, "consuming")

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        producer, self._dlq_producer = self._dlq_producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _loop(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(
                timeout_ms=500, max_records=self.config.max_records
            )
            for tp, messages in batches.items():
                if self._stopping.is_set():
                    break
                await self._partition_batch(tp, messages)

    async def _partition_batch(self, tp: TopicPartition, messages: list[Any]) -> None:
        try:
            await self.process_batch(messages)
        except ShuttingDownError as stopped:
            # Commit what was finished; the rest is read again after restart.
            if stopped.args and isinstance(stopped.args[0], int):
                await self._commit(tp, stopped.args[0])
            raise
        await self._commit(tp, messages[-1].offset + 1)

    async def _commit(self, tp: TopicPartition, next_offset: int) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({tp: next_offset})
        except CommitFailedError as exc:
            # Rebalanced away: the new owner re-reads it and dedupe makes that harmless.
            log.info("consumer %s: commit lost to a rebalance: %s", self.config.name, exc)
            return
        if self.on_committed is not None:
            self.on_committed(tp, next_offset)

    async def process_batch(self, messages: list[Any]) -> None:
        """Handle a partition's batch in one transaction (one commit instead of one per
        message). If a message fails, the transaction rolls back: the messages before it
        are handled again one by one, the failing one goes through the retry policy (a
        permanent failure is dead-lettered without running its handler again), and the
        rest continue as a batch.

        Raises `ShuttingDownError(next_offset)` when stopped mid-batch: messages from
        `next_offset` on were not handled and must not be committed."""
        items: list[tuple[Any, Envelope | EnvelopeError]] = []
        for message in messages:
            try:
                envelope = self._decode(message)
            except EnvelopeError as exc:
                items.append((message, exc))
                continue
            if not self._wanted(envelope):
                HANDLED.labels(self.config.name, "ignored").inc()
                continue
            items.append((message, envelope))
        i = 0
        while i < len(items):
            message, item = items[i]
            if self._stopping.is_set():
                raise ShuttingDownError(message.offset)
            if isinstance(item, EnvelopeError):
                await self._dead_letter(message, item)
                i += 1
                continue
            run: list[tuple[Any, Envelope]] = []
            for m, e in items[i:]:
                if isinstance(e, EnvelopeError):
                    break
                run.append((m, e))
            i += await self._process_run(run)

    def _wanted(self, envelope: Envelope) -> bool:
        if self.config.wants is None:
            return True
        try:
            return self.config.wants(envelope)
        except Exception:  # the handler, the retry policy and the DLQ judge it instead
            return True

    async def _process_run(self, run: list[tuple[Any, Envelope]]) -> int:
        """Handle decodable messages from the start of `run`; returns how many were done."""
        if len(run) == 1:
            await self._process_decoded(*run[0])
            return 1
        failed_at, error = await self._try_together(run)
        if error is None:
            return len(run)
        log.info(
            "consumer %s: batch of %d failed at %s (%s)",
            self.config.name,
            len(run),
            failed_at,
            describe(error),
        )
        if failed_at is None:  # not one message's fault (e.g. the commit): one by one
            for message, envelope in run:
                if self._stopping.is_set():
                    raise ShuttingDownError(message.offset)
                await self._process_decoded(message, envelope)
            return len(run)
        for message, envelope in run[:failed_at]:
            await self._process_decoded(message, envelope)
        message, envelope = run[failed_at]
        retrying = self._retrying(envelope)
        decision = retrying.failed(error)
        if decision.retry:
            await self._process_decoded(message, envelope, retrying=retrying, first=decision)
        else:
            await self._dead_letter(message, error, decision)
        return failed_at + 1

    async def _try_together(
        self, run: list[tuple[Any, Envelope]]
    ) -> tuple[int | None, BaseException | None]:
        """One transaction for the whole run: (index of the failing message, error)."""
        outcomes: list[str] = []
        failed_at: int | None = None
        try:
            async with self.db.transaction() as session:
                for index, (message, envelope) in enumerate(run):
                    token = request_id_var.set(envelope.subject)
                    failed_at = index
                    try:
                        with self._span(message, envelope):
                            if await claim_event(
                                session, consumer=self.config.name, event_id=envelope.id
                            ):
                                with caused_by(envelope.id, envelope.time):
                                    await self.handler(session, envelope)
                                outcomes.append("handled")
                            else:
                                outcomes.append("duplicate")
                    finally:
                        request_id_var.reset(token)
                failed_at = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return failed_at, exc
        for outcome in outcomes:
            HANDLED.labels(self.config.name, outcome).inc()
        health.ok(self._component, "consuming")
        return None, None

    def _span(self, message: Any, envelope: Envelope) -> Any:
        return tracer().start_as_current_span(
            f"process {message.topic}",
            context=context_from(envelope.traceparent, envelope.tracestate),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": message.topic,
                "messaging.kafka.message.offset": message.offset,
                "messaging.message.id": envelope.id,
                "messaging.consumer.group.name": self.config.name,
            },
        )

    async def process(self, message: Any) -> None:
        """Handle one Kafka record: dedupe + state change in one transaction, or DLQ."""
        await self.process_batch([message])

    def _retrying(self, envelope: Envelope) -> Retrying:
        return Retrying(
            self.retry, component=self._component, what=f"{envelope.type} {envelope.id}"
        )

    async def _process_decoded(
        self,
        message: Any,
        envelope: Envelope,
        *,
        retrying: Retrying | None = None,
        first: Decision | None = None,
    ) -> None:
        """Handle one message until it succeeds, is dead-lettered, or the consumer stops.
        `first` is a transient failure already met (in a batch) and still to be waited."""
        token = request_id_var.set(envelope.subject)
        retrying = retrying or self._retrying(envelope)
        try:
            if first is not None and not await self._wait_to_retry(message, envelope, first):
                raise ShuttingDownError(message.offset)
            while True:
                try:
                    with self._span(message, envelope):
                        outcome = await self._handle(message, envelope)
                    HANDLED.labels(self.config.name, outcome).inc()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    decision = retrying.failed(exc)
                    if not decision.retry:
                        await self._dead_letter(message, exc, decision)
                        return
                    if not await self._wait_to_retry(message, envelope, decision):
                        raise ShuttingDownError(message.offset) from exc
        finally:
            request_id_var.reset(token)

    async def _wait_to_retry(self, message: Any, envelope: Envelope, decision: Decision) -> bool:
        health.failing(self._component, f"retrying: {decision.reason}")
        log.warning(
            "consumer %s: %s %s failed (%s); retry in %.1fs",
            self.config.name,
            envelope.type,
            envelope.id,
            decision.reason,
            decision.delay,
        )
        return await self.retry.wait(decision, self._stopping)

    async def _handle(self, message: Any, envelope: Envelope) -> str:
        async with self.db.transaction() as session:
            if not await claim_event(session, consumer=self.config.name, event_id=envelope.id):
                return "duplicate"
            with caused_by(envelope.id, envelope.time):
                await self.handler(session, envelope)
        health.ok(self._component, "consuming")
        return "handled"

    def _decode(self, message: Any) -> Envelope:
        if self.config.raw_key is None:
            envelope = decode(message.value, message.headers)
            topic = self.config.signed.get(message.topic)
            if topic is not None:
                check_signature(
                    self.config.verifier,
                    topic,
                    message,
                    envelope,
                    consumer=self.config.name,
                )
            return envelope
        data = parse_json_object(message.value)
        key = self.config.raw_key(data)
        if not key:
            raise EnvelopeError("raw record has no deduplication key")
        return Envelope(
            id=key,
            source="raw",
            type="raw",
            time=datetime.now(UTC),
            subject=message.key.decode(errors="replace") if message.key else None,
            data=data,
        )

    async def _dead_letter(
        self, message: Any, error: BaseException, decision: Decision | None = None
    ) -> None:
        reason = decision.reason if decision is not None else describe(error)
        headers = [
            *[(k, v) for k, v in message.headers or () if not k.startswith("dlq_")],
            ("dlq_origin_topic", message.topic.encode()),
            ("dlq_origin_partition", str(message.partition).encode()),
            ("dlq_origin_offset", str(message.offset).encode()),
            ("dlq_consumer", self.config.name.encode()),
            ("dlq_error", reason.encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await self._publish_dead_letter(message, headers)
        DEAD_LETTERED.labels(self.config.name).inc()
        HANDLED.labels(self.config.name, "dead_lettered").inc()
        log.error(
            "consumer %s: dead-lettered %s[%d]@%d: %s",
            self.config.name,
            message.topic,
            message.partition,
            message.offset,
            reason,
        )
        ce_type = dict(message.headers or ()).get("ce_type", b"")
        ce_type = ce_type.decode(errors="replace") if isinstance(ce_type, bytes) else ""
        if is_security_relevant(ce_type):
            SECURITY_DEAD_LETTERED.labels(self.config.name, ce_type).inc()
            log.error(
                "SECURITY: consumer %s dead-lettered security-relevant %s (ce_id %s): %s%s",
                self.config.name,
                ce_type,
                dict(message.headers or ()).get("ce_id", b"?").decode(errors="replace"),
                reason,
                # A forgery is evidence, not work to re-drive.
                ""
                if isinstance(error, SignatureError)
                else "; re-drive it after the fix (docs/runbook.md)",
            )

    async def _publish_dead_letter(self, message: Any, headers: list[tuple[str, bytes]]) -> None:
        """Put the message on the DLQ, retrying until it is there or the process stops
        (the offset is not committed until the DLQ holds the message)."""
        retrying = Retrying(self.retry, component=f"{self._component}:dlq", what="a dead letter")
        while True:
            try:
                if self._dlq_producer is None:
                    producer = idempotent_producer(
                        self.config.kafka, client_id=f"{self.config.name}-dlq"
                    )
                    await producer.start()
                    self._dlq_producer = producer
                await self._dlq_producer.send_and_wait(
                    self.config.dlq_topic, value=message.value, key=message.key, headers=headers
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry = retrying.failed_outside_work(exc)
                log.warning(
                    "consumer %s: DLQ publish failed (%s); retrying", self.config.name, retry.reason
                )
                producer, self._dlq_producer = self._dlq_producer, None
                if producer is not None:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                if not await self.retry.wait(retry, self._stopping):
                    raise ShuttingDownError(message.offset) from exc
