"""Durable timers (ARCHITECTURE.md §3): rows with a due time, claimed one at a time
with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite's BEGIN IMMEDIATE
serialises its single replica). A timer's handler runs in the same transaction that
marks it fired, so its effects — state and outbox rows — happen exactly once, and a
process killed mid-handler leaves the timer due for the next claimant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import JSON as SAJSON
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from elevate_core.causes import caused_by, timer_cause_id
from elevate_core.clock import Clock, SystemClock
from elevate_core.db import Base, Database, UTCDateTime
from elevate_core.failpoints import failpoint
from elevate_core.notify import Waiter, mark, wake
from elevate_core.retry import DEFAULT_POLICY, Retrying, RetryPolicy

log = logging.getLogger(__name__)
CHANNEL = "elevate_timers"

FIRED = Counter("elevate_timers_fired_total", "Timers fired", ["kind"])
FAILED = Counter("elevate_timers_failed_total", "Timer handler failures", ["kind"])
DEAD = Counter(
    "elevate_timers_dead_total",
    "Timers whose handler failed permanently (kept with the error, not retried)",
    ["kind"],
)
OVERDUE = Gauge("elevate_timers_overdue", "Timers past their due time and not yet fired")


class Timer(Base):
    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(SAJSON, default=dict)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("kind", "key", name="uq_timers_kind_key"),
        Index("ix_timers_due", "fired_at", "due_at"),
    )


TimerHandler = Callable[[AsyncSession, Timer], Awaitable[None]]


SCHEDULED_DUE = "_scheduled_due"


def scheduled_due(timer: Timer) -> datetime:
    """When the timer was scheduled to fire (a failed attempt's backoff does not count)."""
    raw = timer.payload.get(SCHEDULED_DUE) if timer.payload else None
    return datetime.fromisoformat(raw) if isinstance(raw, str) else timer.due_at


async def schedule(
    session: AsyncSession,
    *,
    kind: str,
    key: str,
    due_at: datetime,
    payload: Mapping[str, Any] | None = None,
) -> None:
    """Create or re-arm the timer (kind, key) in the caller's transaction."""
    # Locked: a fired timer being purged (elevate_core.purge) is then either gone, and made
    # anew, or re-armed before the purge's delete re-checks it — never updated while gone.
    existing = (
        await session.execute(
            select(Timer).where(Timer.kind == kind, Timer.key == key).with_for_update()
        )
    ).scalar_one_or_none()
    if existing is None:
        session.add(
            Timer(kind=kind, key=key, due_at=due_at, payload=dict(payload or {}), attempts=0)
        )
    else:
        existing.due_at = due_at
        existing.payload = dict(payload or {})
        existing.fired_at = None
        existing.attempts = 0
        existing.last_error = None
    await mark(session, CHANNEL)


async def cancel(session: AsyncSession, *, kind: str, key: str) -> bool:
    """Remove an unfired timer; True if there was one."""
    result = await session.execute(
        delete(Timer).where(Timer.kind == kind, Timer.key == key, Timer.fired_at.is_(None))
    )
    return bool(getattr(result, "rowcount", 0))


class TimerRunner:
    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, TimerHandler],
        *,
        clock: Clock | None = None,
        max_idle_seconds: float = 30.0,
        retry: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.db = db
        self.handlers = dict(handlers)
        self.clock = clock or SystemClock()
        self.max_idle_seconds = max_idle_seconds
        self.retry = retry
        self._stopping = asyncio.Event()

    async def fire_due(self, *, limit: int = 1000) -> int:
        """Fire every due timer (one transaction each); returns how many were handled."""
        handled = 0
        while handled < limit and not self._stopping.is_set():
            if not await self._fire_one():
                break
            handled += 1
        return handled

    async def _fire_one(self) -> bool:
        now = self.clock.now()
        async with self.db.transaction() as session:
            timer = (
                await session.execute(
                    select(Timer)
                    .where(
                        Timer.fired_at.is_(None),
                        Timer.due_at <= now,
                        Timer.kind.in_(list(self.handlers)),
                    )
                    .order_by(Timer.due_at, Timer.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).scalar_one_or_none()
            if timer is None:
                return False
            try:
                due = scheduled_due(timer)
                async with session.begin_nested():
                    with caused_by(timer_cause_id(timer.kind, timer.key, due), due):
                        await self.handlers[timer.kind](session, timer)
                failpoint("timers.after_handler")  # crash test: handled, not committed
                timer.fired_at = now
                FIRED.labels(timer.kind).inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record_failure(timer, exc, now)
        return True

    def _record_failure(self, timer: Timer, exc: Exception, now: datetime) -> None:
        FAILED.labels(timer.kind).inc()
        timer.attempts += 1
        decision = self.retry.decide(exc, attempt=timer.attempts)
        timer.last_error = decision.reason
        if not decision.retry:
            # Permanent: retrying cannot help. The row keeps the error (the timers' dead
            # letter); level-triggered owners re-derive what it was for on their next pass.
            timer.fired_at = now
            DEAD.labels(timer.kind).inc()
            log.error("timer %s/%s failed permanently: %s", timer.kind, timer.key, decision.reason)
            return
        # A retry moves due_at; the cause (and so the ids of what the timer publishes)
        # stays that of the time it was scheduled for.
        timer.payload = {**timer.payload, SCHEDULED_DUE: scheduled_due(timer).isoformat()}
        timer.due_at = now + timedelta(seconds=decision.delay)
        log.warning(
            "timer %s/%s failed (attempt %d), retry in %.1fs: %s",
            timer.kind,
            timer.key,
            timer.attempts,
            decision.delay,
            decision.reason,
        )

    async def next_due(self) -> datetime | None:
        async with self.db.sessions() as session:
            due: datetime | None = (
                await session.execute(
                    select(func.min(Timer.due_at)).where(
                        Timer.fired_at.is_(None), Timer.kind.in_(list(self.handlers))
                    )
                )
            ).scalar_one_or_none()
        # MIN() loses the column type on SQLite: the value comes back naive.
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return due

    async def run(self) -> None:
        waiter = Waiter(CHANNEL)
        retrying = Retrying(self.retry, component="timers", what="the timer loop")
        try:
            while not self._stopping.is_set():
                try:
                    await self.fire_due()
                    due = await self.next_due()
                    retrying.succeeded()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database away: wait and try again
                    decision = retrying.failed_outside_work(exc)
                    log.warning("timer runner: %s; retry %d", decision.reason, retrying.attempt)
                    await self.retry.wait(decision, self._stopping)
                    continue
                wait = self.max_idle_seconds
                if due is not None:
                    wait = max(0.0, min(wait, (due - self.clock.now()).total_seconds()))
                    OVERDUE.set(0 if due > self.clock.now() else 1)
                if wait > 0:
                    await waiter.wait(wait)
        finally:
            waiter.close()

    async def stop(self) -> None:
        self._stopping.set()
        wake(CHANNEL)  # do not sit out the idle wait
