"""The consumer of the requests, decisions and grants topics: it learns each request's
details and turns events into notices (dispatch on event types, `domain.notices_for`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import RequestApproved, RequestSubmitted, _GrantEvent
from elevate_core.kafka.consumer import Handler
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_notifier import service
from elevate_notifier.domain import notices_for

log = logging.getLogger("elevate.notifier")

CONSUMER_NAME = "notifier.events"

STALE = Counter(
    "elevate_notifier_stale_events_total",
    "Events read too late to be news (a replay): remembered, not sent",
)


def events_handler(deps: service.Deps) -> Handler:
    stale_after = timedelta(seconds=deps.settings.stale_after_seconds)

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event()
        now = datetime.now(UTC)
        await _learn(session, deps=deps, event=event, now=now)
        notices = notices_for(event)
        if notices and now - envelope.time > stale_after:
            STALE.inc()
            log.debug(
                "not sending %s %s: read %s late", envelope.type, envelope.id, now - envelope.time
            )
            return
        for notice in notices:
            await service.on_notice(
                session, deps=deps, notice=notice, event_id=envelope.id, now=now
            )

    return handle


async def _learn(session: AsyncSession, *, deps: service.Deps, event: Event, now: datetime) -> None:
    """Every event that carries a request's details teaches them."""
    match event:
        case RequestSubmitted():
            await service.remember(
                session, deps=deps, details=event, approval_rule=event.approval_rule, now=now
            )
        case RequestApproved() | _GrantEvent():
            snapshot = event.snapshot
            await service.remember(
                session,
                deps=deps,
                details=snapshot,
                approval_rule=snapshot.approval_rule,
                now=now,
            )
