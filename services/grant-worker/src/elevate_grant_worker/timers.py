"""Durable timers of grant-worker: activation at the start, revocation at the end.

Each handler runs in the transaction that marks the timer fired, and only changes rows
(no AWS call): the assignment worker does the AWS part from the recorded state.
"""

from __future__ import annotations

from elevate_core.clock import Clock
from elevate_core.failpoints import failpoint
from elevate_core.timers import Timer, TimerHandler
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service


def handlers(*, clock: Clock) -> dict[str, TimerHandler]:
    async def activate(session: AsyncSession, timer: Timer) -> None:
        await service.activation_due(session, grant_id=timer.key, now=clock.now())
        failpoint("grant.after_timer_claim")  # crash test: claimed, not committed

    async def expire(session: AsyncSession, timer: Timer) -> None:
        await service.expiry_due(session, grant_id=timer.key, now=clock.now())

    return {service.ACTIVATE_TIMER: activate, service.EXPIRE_TIMER: expire}
