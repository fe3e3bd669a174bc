"""The delivery workers: one per configured channel, so a channel that is down delays only
its own messages. Each claims the oldest due row of its channel (`FOR UPDATE SKIP
LOCKED`: replicas share the work), sends it and marks it sent in the same transaction.

A failure the channel calls temporary is retried with the one retry policy's backoff;
after `delivery_max_attempts`, or at once for a refusal, the row is dead: kept with its
reason and published to the dead-letter topic. Rows of one recipient go out in order
(an earlier row still pending holds back the later ones), so "ending soon" never arrives
after "ended"."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import orjson
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_core.notify import Waiter
from elevate_core.outbox import Outbox
from elevate_core.retry import Retrying, RetryPolicy
from prometheus_client import Counter
from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from elevate_notifier.channels import Sender
from elevate_notifier.domain import Message
from elevate_notifier.models import Delivery
from elevate_notifier.service import DELIVERIES

log = logging.getLogger("elevate.notifier")

SENT = Counter("elevate_notifier_sent_total", "Notifications delivered", ["channel", "kind"])
FAILED = Counter(
    "elevate_notifier_failed_total", "Delivery attempts that failed (retried)", ["channel"]
)
DEAD = Counter(
    "elevate_notifier_dead_total",
    "Notifications given up on (dead-lettered with their reason)",
    ["channel"],
)

_Earlier = aliased(Delivery)
# How long a claimed row is left alone while its channel is called.
LEASE = timedelta(seconds=120)


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        sender: Sender,
        *,
        outbox: Outbox,
        max_attempts: int,
        retry: RetryPolicy,
        max_idle_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.sender = sender
        self.outbox = outbox
        self.max_attempts = max_attempts
        self.retry = retry
        self.max_idle_seconds = max_idle_seconds
        self._stopping = asyncio.Event()
        self._waiter: Waiter | None = None

    @property
    def channel(self) -> str:
        return self.sender.channel

    async def deliver_due(self, *, limit: int = 1000) -> int:
        """Send every due row of this channel (one transaction each); how many were tried."""
        tried = 0
        while tried < limit and not self._stopping.is_set():
            if not await self._deliver_one():
                break
            tried += 1
        return tried

    async def _deliver_one(self) -> bool:
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            row = await self._claim(session, now)
            if row is None:
                return False
            # In flight: no other replica takes it until the lease is over (a crash
            # mid-send means it is sent again then: at least once, never lost).
            row.due_at = now + LEASE
            row_id, target, key = row.id, row.target, _key(row)
            message = Message.from_json(row.message)
        error: Exception | None = None
        sent = None
        try:
            # Outside any transaction: a slow channel holds no lock.
            sent = await self.sender.send(target, message, key=key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        async with self.db.transaction() as session:
            row = await session.get(Delivery, row_id, with_for_update=True)
            if row is None or row.status != "pending":
                return True
            done = datetime.now(UTC)
            if sent is None:
                await self._failed(session, row, error or RuntimeError("not sent"), done)
                return True
            row.status, row.sent_at = "sent", done
            row.slack_channel, row.slack_ts = sent.slack_channel, sent.slack_ts
            SENT.labels(self.channel, row.kind).inc()
            log.info(
                "sent %s by %s to %s (delivery %d)", row.kind, self.channel, _shown(target), row_id
            )
        return True

    async def _claim(self, session: AsyncSession, now: datetime) -> Delivery | None:
        earlier_pending = exists().where(
            and_(
                _Earlier.channel == Delivery.channel,
                _Earlier.target == Delivery.target,
                _Earlier.status == "pending",
                _Earlier.id < Delivery.id,
            )
        )
        return (
            await session.execute(
                select(Delivery)
                .where(
                    Delivery.channel == self.channel,
                    Delivery.status == "pending",
                    Delivery.due_at <= now,
                    ~earlier_pending,
                )
                .order_by(Delivery.due_at, Delivery.id)
                .limit(1)
                .with_for_update(skip_locked=True, of=Delivery)
            )
        ).scalar_one_or_none()

    async def _failed(
        self, session: AsyncSession, row: Delivery, exc: Exception, now: datetime
    ) -> None:
        row.attempts += 1
        decision = self.retry.decide(exc, attempt=row.attempts)
        row.last_error = decision.reason
        if decision.retry and row.attempts < self.max_attempts:
            FAILED.labels(self.channel).inc()
            row.due_at = now + timedelta(seconds=decision.delay)
            log.warning(
                "%s delivery %d failed (attempt %d), retry in %.1fs: %s",
                self.channel,
                row.id,
                row.attempts,
                decision.delay,
                decision.reason,
            )
            return
        row.status = "dead"
        DEAD.labels(self.channel).inc()
        log.error(
            "%s delivery %d dead after %d attempt(s): %s",
            self.channel,
            row.id,
            row.attempts,
            decision.reason,
        )
        await self.outbox.add_raw(
            session,
            topic=Topics.DLQ,
            key=row.request_id,
            value=orjson.dumps(
                {"delivery": row.id, "target": _shown(row.target), "message": row.message}
            ),
            headers=[
                ("dlq_consumer", f"notifier.{self.channel}"),
                ("dlq_error", decision.reason),
                ("dlq_failed_at", now.isoformat()),
                ("dlq_notifier_delivery", str(row.id)),
                ("content-type", "application/json"),
            ],
        )

    async def next_due(self) -> datetime | None:
        async with self.db.sessions() as session:
            due: datetime | None = (
                await session.execute(
                    select(func.min(Delivery.due_at)).where(
                        Delivery.channel == self.channel, Delivery.status == "pending"
                    )
                )
            ).scalar_one_or_none()
        if due is not None and due.tzinfo is None:  # MIN() on SQLite: naive
            due = due.replace(tzinfo=UTC)
        return due

    async def run(self) -> None:
        waiter = Waiter(f"{DELIVERIES}:{self.channel}")
        retrying = Retrying(
            self.retry, component=f"notifier:{self.channel}", what="the delivery loop"
        )
        try:
            while not self._stopping.is_set():
                try:
                    await self.deliver_due()
                    due = await self.next_due()
                    retrying.succeeded()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # our database away: wait and try again
                    decision = retrying.failed_outside_work(exc)
                    log.warning("%s deliveries: %s", self.channel, decision.reason)
                    await self.retry.wait(decision, self._stopping)
                    continue
                wait = self.max_idle_seconds
                if due is not None:
                    wait = max(0.0, min(wait, (due - datetime.now(UTC)).total_seconds()))
                if wait > 0:
                    await waiter.wait(wait)
        finally:
            waiter.close()
            close = getattr(self.sender, "aclose", None)
            if close is not None:
                await close()

    async def stop(self) -> None:
        self._stopping.set()
        from elevate_core.notify import wake

        wake(f"{DELIVERIES}:{self.channel}")


def _key(row: Delivery) -> str:
    return f"{row.event_id}/{row.channel}/{row.target}"


def _shown(target: str) -> str:
    """A target for logs: an address's domain and first letter, not the whole address."""
    kind, _, rest = target.rpartition(":") if target.startswith("email:") else ("", "", target)
    if "@" in rest:
        local, _, domain = rest.partition("@")
        rest = f"{local[:1]}…@{domain}"
    return f"{kind}:{rest}" if kind else rest
