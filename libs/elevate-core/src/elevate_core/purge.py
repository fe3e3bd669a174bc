"""Purging the runtime tables that would otherwise only grow (docs/runtime.md, "Purge").

What goes, counted back from now:

- `processed_events`: rows not seen for `dedupe_keep` (topic retention + margin by default;
  a duplicate re-arms its row, `kafka/dedupe.py`) — and only while the broker confirms that
  no topic this service consumes keeps a message that long (retention.ms + segment.ms, plus
  an hour for the broker's retention check and clock skew). A message older than that is no
  longer on the broker and cannot be re-delivered, so replay protection inside retention is
  kept. Kafka unreachable, or a topic kept longer: the dedupe purge waits.
- `timers`: fired more than `margin` ago; one that ever failed (`last_error`) is kept for
  `dedupe_keep`, as long as the DLQ keeps its letters, for the diagnosis.
- `outbox`: sent more than `margin` ago. Rows moved aside (`dead_at`) are never purged: they
  were never published, may hold the only full copy of the event, and `elevate dlq redrive`
  puts them back.
- a service's own tables, through hooks (`add_purge_hook` in `app.py`).

The highest `id` of `outbox` and `timers` always stays: SQLite hands out max(id) + 1, so an
id (which the relay and DLQ letters refer to) is never reused. Each batch is one short
transaction of at most `batch_size` rows; on PostgreSQL a transaction-level advisory lock
lets one replica purge at a time (the others skip that table for the round).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import and_, delete, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from elevate_core.clock import Clock, SystemClock
from elevate_core.db import Database
from elevate_core.kafka.dedupe import ProcessedEvent
from elevate_core.outbox import OutboxMessage
from elevate_core.retry import describe
from elevate_core.settings import Settings
from elevate_core.timers import Timer

log = logging.getLogger(__name__)
LOCK_KEY = 0x0E1E9086  # advisory lock id: one purging replica per database at a time
# Beyond the broker's own figures: its retention check runs every 5 minutes by default,
# and producer and consumer clocks may differ a little.
BROKER_SLACK = timedelta(hours=1)

PURGED = Counter("elevate_purged_rows_total", "Rows purged from bounded tables", ["table"])
SKIPPED = Counter(
    "elevate_purge_skipped_total",
    "Purge rounds that left a table alone, and why",
    ["table", "reason"],
)


@dataclass(frozen=True, slots=True)
class Horizons:
    """How long rows are kept past the moment they stopped mattering."""

    margin: timedelta
    dedupe: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Horizons:
        return cls(margin=timedelta(hours=settings.purge_margin_hours), dedupe=settings.dedupe_keep)


# One batch: delete at most `limit` rows that are past their horizon; returns how many.
PurgeBatch = Callable[[AsyncSession, Horizons, datetime, int], Awaitable[int]]


class NoTopics:
    """This process consumes nothing: replicas sharing its database that do consume (and so
    know the topics their dedupe rows guard) purge those rows."""


NO_TOPICS = NoTopics()
# The longest the broker may keep a message of the consumed topics (None: for ever).
BrokerStay = Callable[[], Awaitable[timedelta | NoTopics | None]]


@dataclass(frozen=True, slots=True)
class PurgeHook:
    table: str
    batch: PurgeBatch


async def delete_batch(
    session: AsyncSession, model: Any, keys: Sequence[Any], where: ColumnElement[bool], limit: int
) -> int:
    """Delete at most `limit` rows of `model` matching `where` (by primary key `keys`, in
    key order); returns how many. `where` is applied again outside the key subquery: on
    PostgreSQL it is re-checked on a row changed meanwhile (re-armed, seen again), which
    then stays."""
    target = keys[0] if len(keys) == 1 else tuple_(*keys)
    chosen = select(*keys).where(where).order_by(*keys).limit(limit)
    result = await session.execute(
        delete(model).where(target.in_(chosen), where).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def purge_processed_events(
    session: AsyncSession, horizons: Horizons, now: datetime, limit: int
) -> int:
    old = ProcessedEvent.processed_at < now - horizons.dedupe
    keys = (ProcessedEvent.consumer, ProcessedEvent.event_id)
    return await delete_batch(session, ProcessedEvent, keys, old, limit)


async def purge_fired_timers(
    session: AsyncSession, horizons: Horizons, now: datetime, limit: int
) -> int:
    fired = or_(
        and_(Timer.fired_at < now - horizons.margin, Timer.last_error.is_(None)),
        and_(Timer.fired_at < now - horizons.dedupe, Timer.last_error.is_not(None)),
    )
    highest = select(func.max(Timer.id)).scalar_subquery()
    return await delete_batch(session, Timer, (Timer.id,), and_(fired, Timer.id < highest), limit)


async def purge_sent_outbox(
    session: AsyncSession, horizons: Horizons, now: datetime, limit: int
) -> int:
    sent = OutboxMessage.sent_at < now - horizons.margin
    highest = select(func.max(OutboxMessage.id)).scalar_subquery()
    where = and_(sent, OutboxMessage.id < highest)
    return await delete_batch(session, OutboxMessage, (OutboxMessage.id,), where, limit)


RUNTIME_HOOKS = (
    PurgeHook("processed_events", purge_processed_events),
    PurgeHook("timers", purge_fired_timers),
    PurgeHook("outbox", purge_sent_outbox),
)


class Purger:
    """Runs the purge every `interval` seconds (and once at start)."""

    def __init__(
        self,
        db: Database,
        horizons: Horizons,
        *,
        broker_stay: BrokerStay,
        hooks: Sequence[PurgeHook] = (),
        batch_size: int = 1000,
        interval: float = 3600.0,
        enforce: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.horizons = horizons
        self.broker_stay = broker_stay
        self.hooks = [*RUNTIME_HOOKS, *hooks]
        self.batch_size = batch_size
        self.interval = interval
        # Outside dev/test a broker that may keep messages longer stops the dedupe purge;
        # in dev/test it is only a warning (a short horizon there is a deliberate choice).
        self.enforce = enforce
        self.clock = clock or SystemClock()
        self._stopping = asyncio.Event()

    async def purge_once(self, *, now: datetime | None = None) -> dict[str, int]:
        """One round over every table; returns the rows purged per table."""
        now = now or self.clock.now()
        purged: dict[str, int] = {}
        for hook in self.hooks:
            if self._stopping.is_set():
                break
            if hook.table == "processed_events" and not await self._dedupe_allowed():
                continue
            purged[hook.table] = await self._drain(hook, now)
        return purged

    async def _drain(self, hook: PurgeHook, now: datetime) -> int:
        total = 0
        while not self._stopping.is_set():
            async with self.db.transaction() as session:
                if not await self._lock(session):
                    SKIPPED.labels(hook.table, "another replica purges").inc()
                    break
                count = await hook.batch(session, self.horizons, now, self.batch_size)
            total += count
            PURGED.labels(hook.table).inc(count)
            if count < self.batch_size:
                break
        if total:
            log.info("purged %d row(s) from %s", total, hook.table)
        return total

    async def _lock(self, session: AsyncSession) -> bool:
        if self.db.is_sqlite:
            return True  # BEGIN IMMEDIATE already serialises writers
        got = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        return bool(got.scalar())

    async def _dedupe_allowed(self) -> bool:
        """Whether the broker keeps no message longer than the dedupe horizon allows."""
        try:
            stay = await self.broker_stay()
        except Exception as exc:
            return self._refuse(f"broker unreachable: {describe(exc)}", "broker unreachable")
        if isinstance(stay, NoTopics):
            return False  # left to a replica that consumes
        if stay is not None and stay + BROKER_SLACK <= self.horizons.dedupe:
            return True
        kept = "for ever" if stay is None else f"up to {stay}"
        return self._refuse(
            f"the broker keeps messages {kept}, which a dedupe horizon of "
            f"{self.horizons.dedupe} does not outlast by {BROKER_SLACK} (lower the topics' "
            "segment.ms or retention.ms, or raise ELEVATE_DEDUPE_KEEP_HOURS)",
            "broker keeps messages longer",
        )

    def _refuse(self, why: str, reason: str) -> bool:
        if not self.enforce:
            log.warning("purging processed events anyway (dev/test mode): %s", why)
            return True
        SKIPPED.labels("processed_events", reason).inc()
        log.warning("processed events not purged: %s", why)
        return False

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.purge_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away, a deadlock: the next round retries
                log.warning("purge round failed: %s", describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def stop(self) -> None:
        self._stopping.set()
