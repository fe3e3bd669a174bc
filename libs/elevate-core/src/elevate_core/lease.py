"""Leadership as a lease with an epoch (fencing), for work that must have one actor.

A lease row (`leases`: name, holder, epoch, expires_at) is taken by whoever finds it
expired, which increments its epoch; the holder renews it every `ttl / 8`. The holder
may act only while its lease is known to hold:

- `usable(margin)` — checked immediately before each external call (an AWS request): the
  lease must last at least `margin` more seconds (by our own clock, counted from the start
  of the last successful renewal), so a call that respects its timeouts ends before anyone
  else can take over;
- `check(session)` — inside the transaction of each final write: the row must still name
  this holder and epoch and be unexpired (by the database's clock); otherwise
  `FencedError` rolls the write back.

A renewal that fails, or does not answer within `ttl / 8`, loses the lease at once (`lost`
is set and the `on_lost` callback runs), so a dropped database session stops the holder's
work within seconds, not at TCP keepalive. Every acquisition uses a fresh holder id: a
holder that lost its lease waits for it to expire like anybody else. Times come from the
database on PostgreSQL (one clock for every replica); SQLite runs one replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import BigInteger, Integer, String, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from elevate_core.db import Base, Database, UTCDateTime, insert_for, utcnow
from elevate_core.errors import ElevateError

log = logging.getLogger(__name__)

FENCED = Counter(
    "elevate_lease_fenced_total",
    "Writes or calls refused because the lease was lost or taken over",
    ["lease"],
)
LOST = Counter("elevate_lease_lost_total", "Leases lost while held", ["lease"])


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FencedError(ElevateError):
    """This process no longer holds the lease: it must not act or write."""

    retryable = False


class Lease:
    def __init__(
        self,
        db: Database,
        name: str,
        *,
        ttl: float = 20.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.name = name
        self.ttl = ttl
        self.on_lost = on_lost
        self.holder: str | None = None
        self.epoch: int | None = None
        self._valid_until = 0.0  # monotonic

    @property
    def renew_every(self) -> float:
        return self.ttl / 8

    @property
    def held(self) -> bool:
        return self.epoch is not None and time.monotonic() < self._valid_until

    def usable(self, margin: float = 0.0) -> bool:
        return self.epoch is not None and time.monotonic() + margin < self._valid_until

    def ensure_usable(self, margin: float = 0.0) -> None:
        if not self.usable(margin):
            FENCED.labels(self.name).inc()
            raise FencedError(f"lease {self.name} not held (epoch {self.epoch})")

    async def _now(self, session: AsyncSession) -> datetime:
        if self.db.is_sqlite:
            return utcnow()
        value = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
        return value if isinstance(value, datetime) else utcnow()

    async def acquire(self) -> bool:
        """Take the lease if it is free or expired (a new epoch), or renew our own."""
        if self.epoch is not None:
            return await self.renew()
        started = time.monotonic()
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        async with self.db.transaction() as session:
            now = await self._now(session)
            await session.execute(
                insert_for(session, LeaseRow)
                .values(name=self.name, holder="", epoch=0, expires_at=now)
                .on_conflict_do_nothing()
            )
            row = (
                await session.execute(
                    select(LeaseRow).where(LeaseRow.name == self.name).with_for_update()
                )
            ).scalar_one()
            if row.expires_at > now:
                return False
            row.holder = holder
            row.epoch += 1
            row.expires_at = now + timedelta(seconds=self.ttl)
            epoch = row.epoch
        self.holder, self.epoch = holder, epoch
        self._valid_until = started + self.ttl
        log.info("lease %s taken (epoch %d)", self.name, epoch)
        return True

    async def renew(self) -> bool:
        """Extend the lease; a failure, a timeout or a lost row loses it (returns False)."""
        if self.epoch is None:
            return False
        started = time.monotonic()
        try:
            renewed = await asyncio.wait_for(self._renew(), timeout=self.renew_every)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.lose(f"renewal failed: {exc!r}")
            return False
        if not renewed:
            self.lose("taken over")
            return False
        self._valid_until = started + self.ttl
        return True

    async def _renew(self) -> bool:
        async with self.db.transaction() as session:
            now = await self._now(session)
            result = await session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == self.name,
                    LeaseRow.holder == self.holder,
                    LeaseRow.epoch == self.epoch,
                    LeaseRow.expires_at > now,
                )
                .values(expires_at=now + timedelta(seconds=self.ttl))
            )
            return bool(getattr(result, "rowcount", 0))

    def lose(self, why: str) -> None:
        if self.epoch is None:
            return
        log.warning("lease %s (epoch %d) lost: %s", self.name, self.epoch, why)
        LOST.labels(self.name).inc()
        self.epoch = None
        self.holder = None
        self._valid_until = 0.0
        if self.on_lost is not None:
            self.on_lost()

    async def check(self, session: AsyncSession) -> int:
        """Inside a final write's transaction: refuse it unless we still hold the lease.
        Returns our epoch, to stamp on what is written."""
        epoch, holder = self.epoch, self.holder
        if self.db.is_sqlite:
            row = await session.get(LeaseRow, self.name)
            now = utcnow()
        else:  # the row and the database's clock in one round trip
            found = (
                await session.execute(
                    select(LeaseRow, func.clock_timestamp())
                    .where(LeaseRow.name == self.name)
                    .with_for_update(read=True, of=LeaseRow)
                )
            ).first()
            row, now = (found[0], found[1]) if found is not None else (None, utcnow())
        if (
            epoch is None
            or row is None
            or row.holder != holder
            or row.epoch != epoch
            or row.expires_at <= now
        ):
            FENCED.labels(self.name).inc()
            raise FencedError(f"lease {self.name}: epoch {epoch} is not the current one")
        return epoch

    async def release(self) -> None:
        """Hand the lease over at once (shutdown): expire our row."""
        epoch, holder = self.epoch, self.holder
        self.epoch = None
        self.holder = None
        self._valid_until = 0.0
        if epoch is None:
            return
        try:
            async with self.db.transaction() as session:
                now = await self._now(session)
                await session.execute(
                    update(LeaseRow)
                    .where(
                        LeaseRow.name == self.name,
                        LeaseRow.holder == holder,
                        LeaseRow.epoch == epoch,
                    )
                    .values(expires_at=now)
                )
        except Exception as exc:  # it expires on its own
            log.info("lease %s not released (%r); it expires in %.0fs", self.name, exc, self.ttl)
