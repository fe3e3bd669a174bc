"""The outbox relay (ARCHITECTURE.md §3): publishes unsent outbox rows in id order — hence
in order per key — with an idempotent producer, marks them sent, and never drops one.

- Kafka away: rows stay, the relay backs off through the retry policy and resumes in order.
- A row Kafka *refuses* (too large, topic not authorised, unknown topic) blocks only its
  own key, and only for a bounded number of tries (`max_row_attempts`): then it is moved
  aside — `dead_at` set, a copy on the DLQ, `elevate_outbox_dead_total`, an error log —
  and the rest of its key follows. Rows of other keys keep flowing meanwhile.
- Only one relay per database publishes at a time (a PostgreSQL advisory lock), so
  several replicas keep order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter
from sqlalchemy import or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from elevate_core.backlog import OutboxBacklog
from elevate_core.db import Database, utcnow
from elevate_core.events.topics import Topics
from elevate_core.failpoints import failpoint
from elevate_core.health import health
from elevate_core.kafka.producer import (
    LazyProducer,
    idempotent_producer,
    refused_record,
    topic_refused,
)
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.leader import LeaderLock
from elevate_core.notify import Waiter, wake
from elevate_core.outbox import CHANNEL, OutboxMessage
from elevate_core.retry import DEFAULT_POLICY, Retrying, RetryPolicy, describe
from elevate_core.telemetry import context_from, current_traceparent, tracer

log = logging.getLogger(__name__)
LEADER_LOCK_KEY = 0x0E1E0A7E  # advisory lock id: one publishing relay per database

PUBLISHED = Counter("elevate_outbox_published_total", "Outbox rows published", ["topic"])
DEAD = Counter(
    "elevate_outbox_dead_total",
    "Outbox rows Kafka refused for good, moved aside to the DLQ",
    ["topic", "error"],
)
# The DLQ copy of a row larger than this carries headers only (the row keeps the value).
_DLQ_VALUE_LIMIT = 900_000
_LOOKUP_GRACE = 0.5  # seconds a batch waits for a new topic's metadata


@dataclass
class _Blocked:
    """Keys (and topics) held back after a refusal, until their next try."""

    keys: dict[tuple[str, str | None], float] = field(default_factory=dict)
    topics: dict[str, float] = field(default_factory=dict)

    def expire(self, now: float) -> None:
        self.keys = {k: t for k, t in self.keys.items() if t > now}
        self.topics = {k: t for k, t in self.topics.items() if t > now}

    def filters(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.topics:
            where.append(OutboxMessage.topic.not_in(list(self.topics)))
        keys = [k for _t, k in self.keys if k is not None]
        if keys:
            where.append(or_(OutboxMessage.key.is_(None), OutboxMessage.key.not_in(keys)))
        return where

    def next_due(self) -> float | None:
        times = [*self.keys.values(), *self.topics.values()]
        return min(times) if times else None


@dataclass
class _Round:
    """One batch's outcome."""

    sent: list[OutboxMessage] = field(default_factory=list)
    refused: list[tuple[OutboxMessage, BaseException]] = field(default_factory=list)
    refused_topics: list[tuple[str, BaseException]] = field(default_factory=list)
    unreachable: BaseException | None = None


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        *,
        kafka: KafkaEndpoint,
        client_id: str,
        dlq_topic: str = Topics.DLQ,
        batch_size: int = 500,
        idle_poll_seconds: float = 5.0,
        backlog_refresh_seconds: float = 1.0,
        max_row_attempts: int = 3,
        metadata_timeout_ms: int = 15000,
        retry: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.db = db
        self.kafka = kafka
        self.client_id = client_id
        self.dlq_topic = dlq_topic
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        # `elevate_outbox_pending` / `…_oldest_unsent_seconds`, measured each cycle.
        self.backlog = OutboxBacklog(db, refresh_seconds=backlog_refresh_seconds)
        self.max_row_attempts = max_row_attempts
        self.retry = retry
        self._stopping = asyncio.Event()
        self._producer = LazyProducer(
            lambda: idempotent_producer(
                kafka, client_id=client_id, request_timeout_ms=metadata_timeout_ms
            )
        )
        self._leader = LeaderLock(db, key=LEADER_LOCK_KEY, name=f"outbox relay {client_id}")
        self._component = f"kafka-relay:{client_id}"
        self._blocked = _Blocked()
        self._metadata: dict[str, asyncio.Task[Any]] = {}
        self._row_retry: dict[int, Retrying] = {}
        self._isolate: set[int] = set()  # rows to send on their own next time

    # ---- lifecycle ----

    async def run(self) -> None:
        waiter = Waiter(CHANNEL)
        retrying = Retrying(self.retry, component=self._component, what="publishing")
        try:
            while not self._stopping.is_set():
                try:
                    if not await self._leader.acquire():
                        await self.backlog.refresh()  # every replica reports the real backlog
                        await waiter.wait(self.idle_poll_seconds)
                        continue
                    published = await self.publish_once()
                    retrying.succeeded()
                    # Just drained: show it at once; otherwise at most once a second.
                    await self.backlog.refresh(force=0 < published < self.batch_size)
                    if published == 0:
                        await waiter.wait(self._idle_wait())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Kafka or DB away: keep the rows, back off, retry
                    decision = retrying.failed_outside_work(exc)
                    health.failing(self._component, f"cannot publish: {decision.reason}")
                    log.warning("outbox relay: %s; retry %d", decision.reason, retrying.attempt)
                    await self._producer.close()
                    await self.backlog.refresh()
                    await self.retry.wait(decision, self._stopping)
        finally:
            waiter.close()
            await self.close()

    def _idle_wait(self) -> float:
        due = self._blocked.next_due()
        if due is None:
            return self.idle_poll_seconds
        return max(0.01, min(self.idle_poll_seconds, due - time.monotonic()))

    async def stop(self) -> None:
        self._stopping.set()
        wake(CHANNEL)  # do not sit out the idle poll

    async def close(self) -> None:
        """Drop the producer and leadership (also done when `run` ends)."""
        for task in self._metadata.values():
            task.cancel()
        self._metadata.clear()
        await self._producer.close()
        await self._leader.release()

    # ---- one batch ----

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows in id order; returns how many were sent.

        Raises when Kafka cannot be reached and nothing was sent (the caller backs off)."""
        self._blocked.expire(time.monotonic())
        lookups = self._collect_lookups()
        async with self.db.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxMessage)
                        .where(
                            OutboxMessage.sent_at.is_(None),
                            OutboxMessage.dead_at.is_(None),
                            *self._blocked.filters(),
                        )
                        .order_by(OutboxMessage.id)
                        .limit(self.batch_size)
                    )
                )
                .scalars()
                .all()
            )
        if not rows:
            if lookups:
                await self._count_topic_tries(lookups)
            return 0
        producer = await self._producer.get()
        await self._look_up_topics(producer, {r.topic for r in rows})
        result = await self._send_rows(producer, rows)
        result.refused_topics += lookups
        if result.sent:
            failpoint("outbox.after_publish")  # crash test: published, not yet marked sent
        if result.sent:
            async with self.db.transaction() as session:
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_([r.id for r in result.sent]))
                    .values(sent_at=utcnow())
                )
            for row in result.sent:
                PUBLISHED.labels(row.topic).inc()
                self._row_retry.pop(row.id, None)
                self._isolate.discard(row.id)
        for row, error in result.refused:
            await self._count_try(producer, row, error)
        for topic, error in result.refused_topics:
            await self._count_topic_try(producer, topic, error)
        if result.unreachable is not None and not result.sent:
            raise result.unreachable
        health.ok(self._component, "connected")
        return len(result.sent)

    async def _send_rows(self, producer: Any, rows: Sequence[OutboxMessage]) -> _Round:
        out = _Round()
        ready = self._ready_topics(producer, {r.topic for r in rows})
        stopped: set[tuple[str, str | None]] = set()  # keys with a failure in this batch
        pending: list[tuple[OutboxMessage, Any]] = []
        for row in rows:
            key = (row.topic, row.key)
            if key in stopped or row.topic not in ready:
                stopped.add(key)
                continue
            if row.id in self._isolate:
                error = await self._send_alone(producer, row)
                if error is None:
                    self._isolate.discard(row.id)
                    out.sent.append(row)
                else:
                    stopped.add(key)
                    self._failed(out, row, error, alone=True)
                continue
            try:
                pending.append((row, await self._send(producer, row)))
            except Exception as exc:  # refused before it left (e.g. larger than allowed)
                stopped.add(key)
                self._failed(out, row, exc, alone=True)
        results = await asyncio.gather(*(f for _r, f in pending), return_exceptions=True)
        failed: set[tuple[str, str | None]] = set()
        for (row, _future), outcome in zip(pending, results, strict=True):
            key = (row.topic, row.key)
            if isinstance(outcome, BaseException):
                if key not in failed:
                    self._failed(out, row, outcome, alone=False)
                failed.add(key)
            elif key not in failed:
                out.sent.append(row)
            # else: delivered after an earlier row of its key failed — left unsent, it goes
            # out again behind that row (a duplicate that consumers drop on `ce_id`).
        return out

    async def _send_alone(self, producer: Any, row: OutboxMessage) -> BaseException | None:
        """Send one row in a produce request of its own, so a refusal is surely its own."""
        try:
            await producer.flush()
            future = await self._send(producer, row)
            await producer.flush()
            await future
        except Exception as exc:
            return exc
        return None

    def _failed(
        self, out: _Round, row: OutboxMessage, error: BaseException, *, alone: bool
    ) -> None:
        """Sort a failure: the topic refused (every row of it counts a try), this record
        refused (counts a try — but a refusal of a shared produce request may be another
        record's, so such rows are first sent again on their own), or Kafka unreachable."""
        if not refused_record(error):
            if out.unreachable is None:
                out.unreachable = error
        elif topic_refused(error):
            if row.topic not in {t for t, _e in out.refused_topics}:
                out.refused_topics.append((row.topic, error))
        elif alone:
            out.refused.append((row, error))
        else:
            self._isolate.add(row.id)

    async def _look_up_topics(self, producer: Any, topics: set[str]) -> None:
        """Start metadata lookups for topics not known yet and give them a moment: a topic
        that exists is known within a round trip; one that does not is left to finish in
        the background while the rest of the batch goes out."""
        cluster = producer.client.cluster
        for topic in topics:
            if not cluster.partitions_for_topic(topic) and topic not in self._metadata:
                task = asyncio.create_task(producer.partitions_for(topic))
                task.add_done_callback(lambda _t: wake(CHANNEL))
                self._metadata[topic] = task
        waiting = [t for t in self._metadata.values() if not t.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=_LOOKUP_GRACE)

    def _ready_topics(self, producer: Any, topics: set[str]) -> set[str]:
        """Topics whose metadata is known. An unknown topic is looked up in the background
        (aiokafka waits up to its request timeout) and held back meanwhile, so it never
        stalls the other keys."""
        ready: set[str] = set()
        for topic in topics:
            if producer.client.cluster.partitions_for_topic(topic):
                ready.add(topic)
                task = self._metadata.pop(topic, None)
                if task is not None and not task.done():
                    task.cancel()
            elif topic in self._metadata:
                self._blocked.topics[topic] = float("inf")  # until its lookup ends
        return ready

    def _collect_lookups(self) -> list[tuple[str, BaseException]]:
        """Finished metadata lookups: a found topic flows again; a failed one counts a try
        for the oldest row of each of its keys and stays held back until the next try."""
        failed: list[tuple[str, BaseException]] = []
        for topic, task in list(self._metadata.items()):
            if not task.done():
                continue
            del self._metadata[topic]
            error = None if task.cancelled() else task.exception()
            if error is None or not refused_record(error):
                self._blocked.topics.pop(topic, None)  # found, or Kafka away: try again
            else:
                self._blocked.topics[topic] = time.monotonic() + self.retry.backoff(1)
                failed.append((topic, error))
        return failed

    async def _count_topic_tries(self, lookups: list[tuple[str, BaseException]]) -> None:
        producer = await self._producer.get()
        for topic, error in lookups:
            await self._count_topic_try(producer, topic, error)

    async def _count_topic_try(self, producer: Any, topic: str, error: BaseException) -> None:
        """The topic itself is refused: every unsent row of it has been tried once more."""
        reason = describe(error)
        unsent = (
            OutboxMessage.topic == topic,
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.dead_at.is_(None),
        )
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(*unsent)
                .values(attempts=OutboxMessage.attempts + 1, last_error=reason)
            )
        log.warning("outbox: topic %s refused: %s", topic, reason)
        while True:
            async with self.db.sessions() as session:
                rows = (
                    (
                        await session.execute(
                            select(OutboxMessage)
                            .where(*unsent, OutboxMessage.attempts >= self.max_row_attempts)
                            .order_by(OutboxMessage.id)
                            .limit(self.batch_size)
                        )
                    )
                    .scalars()
                    .all()
                )
            if not rows:
                return
            for row in rows:
                await self._move_aside(producer, row, reason)

    async def _count_try(self, producer: Any, row: OutboxMessage, error: BaseException) -> None:
        retrying = self._row_retry.setdefault(
            row.id, Retrying(self.retry, component=self._component, what=f"outbox row {row.id}")
        )
        decision = retrying.failed(error)
        reason = describe(error)
        async with self.db.transaction() as session:
            current = await session.get(OutboxMessage, row.id, with_for_update=True)
            if current is None or current.sent_at is not None or current.dead_at is not None:
                return
            current.attempts += 1
            current.last_error = reason
            attempts = current.attempts
        if attempts < self.max_row_attempts:
            until = time.monotonic() + (decision.delay or self.retry.backoff(attempts))
            self._blocked.keys[(row.topic, row.key)] = until
            log.warning("outbox row %d refused (try %d): %s", row.id, attempts, reason)
            return
        await self._move_aside(producer, row, reason)

    async def _move_aside(self, producer: Any, row: OutboxMessage, reason: str) -> None:
        headers = [(k, v.encode()) for k, v in row.headers if not k.startswith("dlq_")]
        value: bytes | None = row.value
        if len(row.value) > _DLQ_VALUE_LIMIT:
            value = None
            headers.append(("dlq_value_omitted", f"{len(row.value)} bytes".encode()))
        headers += [
            ("dlq_origin_topic", row.topic.encode()),
            ("dlq_origin_outbox_id", str(row.id).encode()),
            ("dlq_consumer", f"{self.client_id} (outbox relay)".encode()),
            ("dlq_error", reason.encode()),
            ("dlq_failed_at", utcnow().isoformat().encode()),
        ]
        key = row.key.encode() if row.key is not None else None
        # The DLQ copy first: if it cannot be written, the row stays and is tried again.
        await producer.send_and_wait(self.dlq_topic, value=value, key=key, headers=headers)
        async with self.db.transaction() as session:
            current = await session.get(OutboxMessage, row.id, with_for_update=True)
            if current is not None and current.sent_at is None:
                current.dead_at = utcnow()
        self._row_retry.pop(row.id, None)
        self._isolate.discard(row.id)
        self._blocked.keys.pop((row.topic, row.key), None)
        DEAD.labels(row.topic, reason.partition(":")[0]).inc()
        log.error(
            "outbox row %d for %s (key %s) moved aside after %d tries: %s",
            row.id,
            row.topic,
            row.key,
            self.max_row_attempts,
            reason,
        )
        wake(CHANNEL)

    async def _send(self, producer: Any, row: OutboxMessage) -> Any:
        headers = {k: v for k, v in row.headers}
        parent = context_from(headers.get("traceparent"), headers.get("tracestate"))
        with tracer().start_as_current_span(
            f"publish {row.topic}",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": row.topic,
                "messaging.message.id": headers.get("ce_id", ""),
            },
        ):
            new_parent, new_state = current_traceparent()
        if new_parent:
            headers["traceparent"] = new_parent
        if new_state:
            headers["tracestate"] = new_state
        return await producer.send(
            row.topic,
            value=row.value,
            key=row.key.encode() if row.key is not None else None,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
