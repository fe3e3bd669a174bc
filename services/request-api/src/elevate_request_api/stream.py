"""Server-Sent Events: one event per status change of a request, on every replica.

A commit that changes a request NOTIFYs `elevate_request_status` with its id
(PostgreSQL), which every replica LISTENs to; on SQLite (one replica) the commit
wakes local streams directly. Each stream re-reads the row when woken, so a missed
or duplicate notification can only cost a re-read, never a wrong status.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from elevate_core.db import Database
from elevate_core.notify import Waiter
from fastapi import Request
from sqlalchemy import func, select

from elevate_request_api.domain import FINAL
from elevate_request_api.models import AccessRequest, TimelineEntry
from elevate_request_api.store import STATUS_CHANNEL

KEEPALIVE_SECONDS = 15.0


async def _snapshot(db: Database, request_id: uuid.UUID) -> dict[str, object] | None:
    async with db.sessions() as session:
        row = await session.get(AccessRequest, request_id)
        if row is None:
            return None
        entries = (
            await session.execute(
                select(func.count())
                .select_from(TimelineEntry)
                .where(TimelineEntry.request_id == request_id)
            )
        ).scalar_one()
        return {
            "id": str(row.id),
            "status": row.status,
            "review": row.review,
            "updated_at": row.updated_at.isoformat(),
            "timeline_entries": entries,
        }


async def status_events(
    request: Request, db: Database, request_id: uuid.UUID
) -> AsyncIterator[str]:
    waiter = Waiter(f"{STATUS_CHANNEL}:{request_id}")
    last_status: object = None
    sent = 0
    try:
        while not await request.is_disconnected():
            snapshot = await _snapshot(db, request_id)
            if snapshot is not None and snapshot["status"] != last_status:
                last_status = snapshot["status"]
                sent += 1
                yield f"id: {sent}\nevent: status\ndata: {json.dumps(snapshot)}\n\n"
                if last_status in FINAL and last_status != "cancelled":
                    return  # nothing can change any more
            if not await waiter.wait(KEEPALIVE_SECONDS):
                yield ": keepalive\n\n"
    finally:
        waiter.close()
