"""notifier's durable timers: "ending soon", due `ending_soon_seconds` before a grant's
end (scheduled when it becomes active, cancelled when it ends)."""

from __future__ import annotations

from datetime import UTC, datetime

from elevate_core.timers import Timer, TimerHandler
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_notifier import service


def timer_handlers(deps: service.Deps) -> dict[str, TimerHandler]:
    async def ending_soon(session: AsyncSession, timer: Timer) -> None:
        await service.ending_soon(session, deps=deps, request_id=timer.key, now=datetime.now(UTC))

    return {service.ENDING_SOON: ending_soon}
