"""Server-Sent Events: one event per status change of a request, on every replica.

A commit that changes a request NOTIFYs `elevate_request_status` with its id
(PostgreSQL), which every replica LISTENs to; on SQLite (one replica) the commit
wakes local streams directly. Each stream re-reads the row when woken, so a missed
or duplicate notification can only cost a re-read, never a wrong status.

A stream lasts no longer than the token that opened it (the client reconnects with a
fresh one), and one user holds at most `max_streams_per_user` streams per replica.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

from elevate_core.clock import Clock
from elevate_core.db import Database
from elevate_core.notify import Waiter
from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from starlette.types import Receive, Scope, Send

from elevate_request_api.domain import FINAL, Status, TooManyStreamsError
from elevate_request_api.models import AccessRequest, TimelineEntry
from elevate_request_api.store import STATUS_CHANNEL

KEEPALIVE_SECONDS = 15.0
# After these a request's status never changes: its stream ends. (A cancelled request
# may still be revoked, if grant-worker had granted it before the cancel.)
CLOSING = FINAL - {Status.CANCELLED}


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


class StreamSlots:
    """How many streams each user holds open on this replica."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: Counter[str] = Counter()

    def take(self, user_id: str) -> None:
        if self._open[user_id] >= self.per_user:
            raise TooManyStreamsError(
                f"at most {self.per_user} open streams per user; close one first"
            )
        self._open[user_id] += 1

    def give_back(self, user_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]

    def held(self, user_id: str) -> int:
        return self._open[user_id]


class SlotStreamingResponse(StreamingResponse):
    """Gives the user's slot back however the response ends (finished, disconnected or
    never started), which a generator's own `finally` cannot promise."""

    def __init__(self, content: AsyncIterator[str], *, slots: StreamSlots, user_id: str) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._slots = slots
        self._user_id = user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back(self._user_id)


async def status_events(
    request: Request,
    db: Database,
    request_id: uuid.UUID,
    *,
    until: datetime,
    clock: Clock,
) -> AsyncIterator[str]:
    """The request's status on every change, until `until` (the token's expiry): then
    `event: expired`, and the stream ends."""
    waiter = Waiter(f"{STATUS_CHANNEL}:{request_id}")
    last_status: object = None
    sent = 0
    try:
        while not await request.is_disconnected():
            left = (until - clock.now()).total_seconds()
            if left <= 0:
                yield "event: expired\ndata: {}\n\n"
                return
            snapshot = await _snapshot(db, request_id)
            if snapshot is not None and snapshot["status"] != last_status:
                last_status = snapshot["status"]
                sent += 1
                yield f"id: {sent}\nevent: status\ndata: {json.dumps(snapshot)}\n\n"
                if last_status in CLOSING:
                    return  # nothing can change any more
            if not await waiter.wait(min(KEEPALIVE_SECONDS, left)):
                yield ": keepalive\n\n"
    finally:
        waiter.close()
