"""The requests-topic consumer: submissions, decisions and cancellations, each handled
in the transaction the runtime opens (with the message's `ce_id` recorded in it)."""

from __future__ import annotations

import logging

from elevate_core.events.envelope import Envelope
from elevate_core.events.models import DecisionSubmitted, RequestCancelled, RequestSubmitted
from elevate_core.kafka.consumer import Handler
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_approval import service

log = logging.getLogger("elevate.approval")

CONSUMER_NAME = "approval"


def requests_handler(deps: service.Deps) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event()
        if isinstance(event, RequestSubmitted):
            await service.submit(
                session, deps=deps, event=event, event_id=envelope.id, submitted_at=envelope.time
            )
        elif isinstance(event, DecisionSubmitted):
            await service.decide(session, deps=deps, event=event, event_id=envelope.id)
        elif isinstance(event, RequestCancelled):
            await service.cancel_request(session, deps=deps, event=event, event_id=envelope.id)
        else:  # RevokeRequested is grant-worker's business
            log.debug("ignoring %s %s", envelope.type, envelope.id)

    return handle
