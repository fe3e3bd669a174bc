"""The outbox backlog as Prometheus sees it: rows waiting to be published and the age of the
oldest, measured from the table by the relay on each cycle (every replica's relay, leader
or not, so each reports the real figure)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from prometheus_client import Gauge
from sqlalchemy import func, select

from elevate_core.db import Database, utcnow
from elevate_core.outbox import OutboxMessage
from elevate_core.retry import describe

log = logging.getLogger(__name__)

PENDING = Gauge("elevate_outbox_pending", "Outbox rows waiting to be published")
OLDEST_UNSENT = Gauge(
    "elevate_outbox_oldest_unsent_seconds",
    "Age of the oldest outbox row waiting to be published (0: none waits)",
)


class OutboxBacklog:
    def __init__(self, db: Database, *, refresh_seconds: float = 1.0) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self._measured_at = float("-inf")

    async def refresh(self, *, force: bool = False) -> None:
        """Measure and set the gauges; at most once per `refresh_seconds` unless `force` (a
        short queue, so the count is cheap). Rows moved aside are not waiting: not counted."""
        now = time.monotonic()
        if not force and now - self._measured_at < self.refresh_seconds:
            return
        self._measured_at = now
        try:
            async with self.db.sessions() as session:
                count, oldest = (
                    await session.execute(
                        select(func.count(), func.min(OutboxMessage.created_at)).where(
                            OutboxMessage.sent_at.is_(None), OutboxMessage.dead_at.is_(None)
                        )
                    )
                ).one()
        except Exception as exc:  # database away: the relay reports it; keep the last values
            log.debug("outbox backlog not measured: %s", describe(exc))
            return
        PENDING.set(count)
        OLDEST_UNSENT.set(_age_seconds(oldest))


def _age_seconds(created_at: datetime | None) -> float:
    if created_at is None:
        return 0.0
    # MIN() loses the column type on SQLite: the value comes back naive (UTC).
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - created_at).total_seconds())
