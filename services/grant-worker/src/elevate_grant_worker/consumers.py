"""What grant-worker reads: `RequestApproved` from the decisions topic only (two consumers,
so an approval-shaped event on any other topic is never acted on), and `RequestCancelled`
/ `RevokeRequested` from the requests topic. Everything else there is not ours: ignored."""

from __future__ import annotations

import logging

from elevate_core.clock import Clock
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import RequestApproved, RequestCancelled, RevokeRequested
from elevate_core.kafka.consumer import Handler
from elevate_core.outbox import Outbox
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service

log = logging.getLogger(__name__)


def decisions_handler(*, outbox: Outbox, clock: Clock) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type != RequestApproved.ce_type:
            return
        event = envelope.event()
        assert isinstance(event, RequestApproved)
        await service.approve(session, event=event, outbox=outbox, now=clock.now())

    return handle


def requests_handler(*, clock: Clock) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type == RequestCancelled.ce_type:
            cancelled = envelope.event()
            assert isinstance(cancelled, RequestCancelled)
            await service.stop(
                session,
                request_id=str(cancelled.request_id),
                reason="cancelled",
                now=clock.now(),
            )
        elif envelope.type == RevokeRequested.ce_type:
            revoke = envelope.event()
            assert isinstance(revoke, RevokeRequested)
            await service.stop(
                session, request_id=str(revoke.request_id), reason="revoked", now=clock.now()
            )

    return handle
