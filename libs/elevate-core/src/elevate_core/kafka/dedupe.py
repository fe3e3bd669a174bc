"""Processed-event records: the consumer side of exactly-once state changes.

`processed_at` is when the event was last *seen*: a copy delivered again (a relay re-send,
a DLQ re-drive, a replayed upstream) moves it forward, so the row outlives every copy still
on the broker and the purge (`elevate_core.purge`) never drops protection a copy needs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from elevate_core.db import Base, UTCDateTime, insert_for, utcnow


class ProcessedEvent(Base):
    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_processed_events_processed_at", "processed_at"),)


async def claim_event(session: AsyncSession, *, consumer: str, event_id: str) -> bool:
    """Record `event_id` as processed in this transaction; False if it already was."""
    now = utcnow()
    values = {"consumer": consumer, "event_id": event_id, "processed_at": now}
    stmt = insert_for(session, ProcessedEvent).values(**values).on_conflict_do_nothing()
    result = await session.execute(stmt)
    if getattr(result, "rowcount", 0):
        return True
    await _seen_again(session, consumer=consumer, event_id=event_id, at=now)
    return False


async def _seen_again(session: AsyncSession, *, consumer: str, event_id: str, at: datetime) -> None:
    """A duplicate restarts the row's horizon: this copy may stay on the broker for a full
    retention from now."""
    await session.execute(
        update(ProcessedEvent)
        .where(ProcessedEvent.consumer == consumer, ProcessedEvent.event_id == event_id)
        .values(processed_at=at)
    )
