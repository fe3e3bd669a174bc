"""Transactional outbox (ARCHITECTURE.md §3).

A service writes its state change and the events it implies in one transaction
(`Outbox.add`). `OutboxRelay` publishes unsent rows in id order — hence in order per
key — with an idempotent producer, marks them sent, and never drops one: while Kafka
is away it keeps the rows and retries with backoff. Only one relay per database
publishes at a time (a PostgreSQL advisory lock), so several replicas keep order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter, Gauge
from sqlalchemy import JSON as SAJSON
from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from elevate_core.backoff import backoff_delay
from elevate_core.db import Base, Database, UTCDateTime, utcnow
from elevate_core.events.base import Event
from elevate_core.events.envelope import encode, new_envelope
from elevate_core.failpoints import failpoint
from elevate_core.health import health
from elevate_core.kafka.producer import LazyProducer, idempotent_producer
from elevate_core.leader import LeaderLock
from elevate_core.notify import Waiter, mark, wake
from elevate_core.telemetry import context_from, current_traceparent, tracer

log = logging.getLogger(__name__)
CHANNEL = "elevate_outbox"
LEADER_LOCK_KEY = 0x0E1E0A7E  # advisory lock id: one publishing relay per database

PUBLISHED = Counter("elevate_outbox_published_total", "Outbox rows published", ["topic"])
PENDING = Gauge("elevate_outbox_pending", "Outbox rows not yet published")


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[list[str]]] = mapped_column(SAJSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_outbox_unsent",
            "id",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
    )


class Outbox:
    """Writes events into the caller's transaction."""

    def __init__(self, *, source: str, topic_prefix: str = "") -> None:
        self.source = source
        self.topic_prefix = topic_prefix

    async def add(
        self,
        session: AsyncSession,
        event: Event,
        *,
        subject: str | None,
        key: str | None = None,
        time: datetime | None = None,
    ) -> str:
        """Queue `event`; it is published only if the transaction commits. Returns ce_id."""
        # add_raw attaches the current trace context (traceparent, tracestate).
        envelope = new_envelope(event, source=self.source, subject=subject, time=time)
        value, headers = encode(envelope)
        await self.add_raw(
            session,
            topic=event.topic,
            key=key if key is not None else subject,
            value=value,
            headers=[(k, v.decode()) for k, v in headers],
        )
        return envelope.id

    async def add_raw(
        self,
        session: AsyncSession,
        *,
        topic: str,
        key: str | None,
        value: bytes,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Queue a message that is not an Elevate CloudEvent (e.g. an OCSF record for a
        SIEM): the value and headers go out as given, plus `traceparent`. Same table, same
        relay, so ordering per key and at-least-once delivery are those of `add`."""
        traceparent, tracestate = current_traceparent()
        row_headers = [[k, v] for k, v in headers]
        if traceparent:
            row_headers.append(["traceparent", traceparent])
        if tracestate:
            row_headers.append(["tracestate", tracestate])
        session.add(
            OutboxMessage(
                topic=f"{self.topic_prefix}{topic}",
                key=key,
                value=value,
                headers=row_headers,
                created_at=utcnow(),
            )
        )
        await mark(session, CHANNEL)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        *,
        bootstrap_servers: str,
        client_id: str,
        batch_size: int = 500,
        idle_poll_seconds: float = 5.0,
        purge_after: timedelta = timedelta(days=7),
    ) -> None:
        self.db = db
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.purge_after = purge_after
        self._stopping = asyncio.Event()
        self._producer = LazyProducer(
            lambda: idempotent_producer(bootstrap_servers, client_id=client_id)
        )
        self._leader = LeaderLock(db, key=LEADER_LOCK_KEY, name=f"outbox relay {client_id}")
        self._component = f"kafka-relay:{client_id}"

    async def run(self) -> None:
        waiter = Waiter(CHANNEL)
        attempt = 0
        last_purge = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    if not await self._leader.acquire():
                        await waiter.wait(self.idle_poll_seconds)
                        continue
                    published = await self.publish_once()
                    attempt = 0
                    if published == 0:
                        if time.monotonic() - last_purge > 3600:
                            last_purge = time.monotonic()
                            await self.purge_sent()  # sent rows are history, not state
                        await waiter.wait(self.idle_poll_seconds)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Kafka or DB away: keep the rows, back off, retry
                    attempt += 1
                    health.failing(self._component, f"cannot publish: {exc!r}")
                    log.warning("outbox relay: %r; retry %d", exc, attempt)
                    await self._producer.close()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._stopping.wait(), backoff_delay(attempt, base=0.5, cap=15)
                        )
        finally:
            waiter.close()
            await self.close()

    async def stop(self) -> None:
        self._stopping.set()
        wake(CHANNEL)  # do not sit out the idle poll

    async def close(self) -> None:
        """Drop the producer and leadership (also done when `run` ends)."""
        await self._producer.close()
        await self._leader.release()

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows in id order; returns how many were sent."""
        async with self.db.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxMessage)
                        .where(OutboxMessage.sent_at.is_(None))
                        .order_by(OutboxMessage.id)
                        .limit(self.batch_size)
                    )
                )
                .scalars()
                .all()
            )
        if not rows:
            PENDING.set(0)
            return 0
        producer = await self._producer.get()
        health.ok(self._component, "connected")
        futures = []
        for row in rows:
            futures.append(await self._send(producer, row))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failpoint("outbox.after_publish")  # crash test: published, not yet marked sent
        sent_ids: list[int] = []
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                break  # keep per-key order: nothing after a failure counts as sent
            sent_ids.append(row.id)
            PUBLISHED.labels(row.topic).inc()
        if sent_ids:
            async with self.db.transaction() as session:
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(sent_ids))
                    .values(sent_at=utcnow())
                )
        if failure is not None:
            raise failure
        health.ok(self._component, "connected")
        return len(sent_ids)

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

    async def purge_sent(self, *, now: datetime | None = None) -> int:
        cutoff = (now or utcnow()) - self.purge_after
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(OutboxMessage).where(OutboxMessage.sent_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)
