"""The requests-topic consumer: submissions, decisions and cancellations, each handled
in the transaction the runtime opens (with the message's `ce_id` recorded in it)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Protocol

from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import DecisionSubmitted, RequestCancelled, RequestSubmitted
from elevate_core.kafka.consumer import Handler
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_approval import service

log = logging.getLogger("elevate.approval")

CONSUMER_NAME = "approval"


class UseCase(Protocol):
    async def __call__(
        self, session: AsyncSession, *, event: Any, event_id: str, at: datetime
    ) -> None: ...


def requests_handler(deps: service.Deps) -> Handler:
    """Dispatch by event type; each use case is judged at the event's own time."""
    submit = functools.partial(service.submit, deps=deps)
    decide = functools.partial(service.decide, deps=deps)
    cancel = functools.partial(service.cancel_request, deps=deps)
    handlers: dict[type[Event], UseCase] = {
        RequestSubmitted: submit,
        DecisionSubmitted: decide,
        RequestCancelled: cancel,
    }

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event()
        use_case = handlers.get(type(event))
        if use_case is None:  # RevokeRequested is grant-worker's business
            log.debug("ignoring %s %s", envelope.type, envelope.id)
            return
        await use_case(session, event=event, event_id=envelope.id, at=envelope.time)

    return handle
