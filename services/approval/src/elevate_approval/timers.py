"""approval's durable timers: a pending request expires at its rule's pending timeout."""

from __future__ import annotations

from elevate_core.timers import Timer, TimerHandler, scheduled_due
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_approval import service


def timer_handlers(deps: service.Deps) -> dict[str, TimerHandler]:
    async def expire(session: AsyncSession, timer: Timer) -> None:
        request_id = str(timer.payload.get("request_id") or timer.key.split("/", 1)[0])
        await service.expire(
            session,
            deps=deps,
            request_id=request_id,
            timer_key=timer.key,
            due=scheduled_due(timer),
        )

    return {service.EXPIRE: expire}
