"""Durable timer: a record waiting for its grant is emitted when its wait is over."""

from __future__ import annotations

from elevate_core.clock import Clock
from elevate_core.outbox import Outbox
from elevate_core.timers import Timer, TimerHandler
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest.service import PENDING_TIMER, CorrelationConfig, fire_pending

__all__ = ["PENDING_TIMER", "pending_record_handler"]


def pending_record_handler(
    *, outbox: Outbox, config: CorrelationConfig, clock: Clock
) -> TimerHandler:
    async def handle(session: AsyncSession, timer: Timer) -> None:
        await fire_pending(
            session,
            event_id=str(timer.payload.get("event_id") or timer.key),
            outbox=outbox,
            config=config,
            now=clock.now(),
        )

    return handle
