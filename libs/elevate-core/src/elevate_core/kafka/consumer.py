"""Idempotent consumer (ARCHITECTURE.md §3).

Each message is handled inside one database transaction that also records its
`ce_id` (a repeat is a no-op); offsets are committed only afterwards. Messages that
cannot be decoded, or that keep failing, go to the dead-letter topic with their
origin in headers, and the consumer carries on. Infrastructure trouble (database
down) is different: the consumer waits and retries rather than dead-lettering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_core.backoff import backoff_delay
from elevate_core.db import Database
from elevate_core.errors import ElevateError
from elevate_core.events.envelope import Envelope, EnvelopeError, decode, parse_json_object
from elevate_core.health import health
from elevate_core.kafka.dedupe import claim_event
from elevate_core.kafka.producer import idempotent_producer
from elevate_core.telemetry import context_from, request_id_var, tracer

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
RawKey = Callable[[dict[str, Any]], str | None]

HANDLED = Counter("elevate_consumer_handled_total", "Messages handled", ["consumer", "outcome"])
DEAD_LETTERED = Counter("elevate_dlq_published_total", "Messages sent to the DLQ", ["consumer"])


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    name: str  # also the dedupe namespace and the default group id
    topics: tuple[str, ...]
    bootstrap_servers: str
    dlq_topic: str
    group_id: str | None = None
    max_attempts: int = 5
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    auto_offset_reset: str = "earliest"
    raw_key: RawKey | None = None  # raw mode: no CloudEvents headers, dedupe on this key


def _is_infrastructure(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | OSError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Consumer:
    def __init__(self, db: Database, config: ConsumerConfig, handler: Handler) -> None:
        self.db = db
        self.config = config
        self.handler = handler
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq_producer: Any = None
        self._component = f"consumer:{config.name}"

    async def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        attempt = 0
        try:
            while not self._stopping.is_set():
                try:
                    await self._start()
                    attempt = 0
                    await self._loop()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    health.failing(self._component, f"{exc!r}")
                    log.warning("consumer %s: %r; retry %d", self.config.name, exc, attempt)
                    await self._close()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._stopping.wait(), backoff_delay(attempt, cap=15)
                        )
        finally:
            await self._close()

    async def _start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            *self.config.topics,
            bootstrap_servers=self.config.bootstrap_servers,
            group_id=self.config.group_id or self.config.name,
            client_id=self.config.name,
            enable_auto_commit=False,
            auto_offset_reset=self.config.auto_offset_reset,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            isolation_level="read_committed",
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
            batches = await self._consumer.getmany(timeout_ms=500, max_records=200)
            for tp, messages in batches.items():
                if self._stopping.is_set():
                    break
                await self.process_batch(messages)
                await self._commit(tp, messages[-1].offset + 1)

    async def _commit(self, tp: TopicPartition, next_offset: int) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({tp: next_offset})
        except CommitFailedError as exc:
            # Rebalanced away: the new owner re-reads it and dedupe makes that harmless.
            log.info("consumer %s: commit lost to a rebalance: %s", self.config.name, exc)

    async def process_batch(self, messages: list[Any]) -> None:
        """Handle a partition's batch in one transaction (one commit instead of one per
        message); if anything in it fails, roll back and handle each message on its own,
        so retries and dead-lettering stay per message."""
        decoded: list[tuple[Any, Envelope]] = []
        for message in messages:
            try:
                decoded.append((message, self._decode(message)))
            except EnvelopeError as exc:
                await self._dead_letter(message, exc)
        if len(decoded) > 1:
            try:
                outcomes = await self._handle_together(decoded)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info(
                    "consumer %s: batch of %d failed (%r); one by one",
                    self.config.name,
                    len(decoded),
                    exc,
                )
            else:
                for outcome in outcomes:
                    HANDLED.labels(self.config.name, outcome).inc()
                return
        for message, envelope in decoded:
            await self._process_decoded(message, envelope)

    async def _handle_together(self, decoded: list[tuple[Any, Envelope]]) -> list[str]:
        outcomes = []
        async with self.db.transaction() as session:
            for message, envelope in decoded:
                token = request_id_var.set(envelope.subject)
                try:
                    with self._span(message, envelope):
                        if await claim_event(
                            session, consumer=self.config.name, event_id=envelope.id
                        ):
                            await self.handler(session, envelope)
                            outcomes.append("handled")
                        else:
                            outcomes.append("duplicate")
                finally:
                    request_id_var.reset(token)
        health.ok(self._component, "consuming")
        return outcomes

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
        try:
            envelope = self._decode(message)
        except EnvelopeError as exc:
            await self._dead_letter(message, exc)
            return
        await self._process_decoded(message, envelope)

    async def _process_decoded(self, message: Any, envelope: Envelope) -> None:
        token = request_id_var.set(envelope.subject)
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    with self._span(message, envelope):
                        outcome = await self._handle(envelope)
                    HANDLED.labels(self.config.name, outcome).inc()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if _is_infrastructure(exc) or (isinstance(exc, KafkaError) and exc.retriable):
                        health.failing(self._component, f"retrying: {exc!r}")
                        await asyncio.sleep(backoff_delay(min(attempt, 8), cap=10))
                        continue  # never dead-letter because our own database is away
                    retryable = (
                        getattr(exc, "retryable", True) if isinstance(exc, ElevateError) else True
                    )
                    if not retryable or attempt >= self.config.max_attempts:
                        log.error(
                            "consumer %s: giving up on %s after %d attempt(s): %r",
                            self.config.name,
                            envelope.id,
                            attempt,
                            exc,
                        )
                        await self._dead_letter(message, exc)
                        return
                    log.warning(
                        "consumer %s: attempt %d failed: %r", self.config.name, attempt, exc
                    )
                    await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=2))
        finally:
            request_id_var.reset(token)

    async def _handle(self, envelope: Envelope) -> str:
        async with self.db.transaction() as session:
            if not await claim_event(session, consumer=self.config.name, event_id=envelope.id):
                return "duplicate"
            await self.handler(session, envelope)
        health.ok(self._component, "consuming")
        return "handled"

    def _decode(self, message: Any) -> Envelope:
        if self.config.raw_key is None:
            return decode(message.value, message.headers)
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

    async def _dead_letter(self, message: Any, error: BaseException) -> None:
        headers = [
            *list(message.headers or ()),
            ("dlq_origin_topic", message.topic.encode()),
            ("dlq_origin_partition", str(message.partition).encode()),
            ("dlq_origin_offset", str(message.offset).encode()),
            ("dlq_consumer", self.config.name.encode()),
            ("dlq_error", f"{type(error).__name__}: {error}"[:2000].encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        attempt = 0
        while True:  # the offset is not committed until the DLQ holds the message
            attempt += 1
            try:
                if self._dlq_producer is None:
                    producer = idempotent_producer(
                        self.config.bootstrap_servers, client_id=f"{self.config.name}-dlq"
                    )
                    await producer.start()
                    self._dlq_producer = producer
                await self._dlq_producer.send_and_wait(
                    self.config.dlq_topic, value=message.value, key=message.key, headers=headers
                )
                DEAD_LETTERED.labels(self.config.name).inc()
                HANDLED.labels(self.config.name, "dead_lettered").inc()
                log.error(
                    "consumer %s: dead-lettered %s[%d]@%d: %s",
                    self.config.name,
                    message.topic,
                    message.partition,
                    message.offset,
                    error,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer %s: DLQ publish failed (%r); retrying", self.config.name, exc)
                producer, self._dlq_producer = self._dlq_producer, None
                if producer is not None:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                await asyncio.sleep(backoff_delay(attempt, cap=10))
