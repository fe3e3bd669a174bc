"""What grant-worker reads: `RequestApproved` from the decisions topic only (its own
consumer, so an approval-shaped event on any other topic is never acted on),
`RequestCancelled` / `RevokeRequested` from the requests topic, and its own past from the
grants topic (managed pairs, standing). Everything else there is not ours: ignored. They
only record facts; the assignment worker acts on them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from elevate_core.clock import Clock
from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import (
    DriftDetected,
    GrantActivated,
    GrantEnded,
    RequestApproved,
    RequestCancelled,
    RevokeRequested,
    StandingAssignmentDropped,
    StandingAssignmentRecorded,
)
from elevate_core.kafka.consumer import Handler
from elevate_core.outbox import Outbox
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service
from elevate_grant_worker.domain import StopKind

log = logging.getLogger(__name__)
Gate = Callable[[], Awaitable[dict[str, int]]]
SOURCE = "elevate/grant-worker"
_HISTORY = frozenset(
    e.ce_type
    for e in (
        GrantActivated,
        GrantEnded,
        StandingAssignmentRecorded,
        StandingAssignmentDropped,
        DriftDetected,
    )
)


def wants_decision(envelope: Envelope) -> bool:
    return envelope.type == RequestApproved.ce_type


def decisions_handler(*, outbox: Outbox, clock: Clock, gate: Gate | None = None) -> Handler:
    """`gate` gives the requests topic's end offsets now (the replay gate, progress.py)."""

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        if not wants_decision(envelope):
            return
        event = envelope.event()
        assert isinstance(event, RequestApproved)
        offsets = await gate() if gate is not None else None
        await service.approve(session, event=event, outbox=outbox, now=clock.now(), gate=offsets)

    return handle


def wants_history(envelope: Envelope) -> bool:
    return envelope.source == SOURCE and envelope.type in _HISTORY


def history_handler(*, clock: Clock) -> Handler:
    """grant-worker's own events, read back: only its own writer's are trusted."""

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        if not wants_history(envelope):
            return
        await service.record_history(session, envelope.event(), now=clock.now())

    return handle


# What each stop on the requests topic means for the grant (dispatch on the event's type).
_STOPS: dict[type[Event], StopKind] = {RequestCancelled: "cancelled", RevokeRequested: "revoked"}


_STOP_TYPES = frozenset(cls.ce_type for cls in _STOPS)


def wants_stop(envelope: Envelope) -> bool:
    return envelope.type in _STOP_TYPES  # submissions and decisions are approval's business


def requests_handler(*, clock: Clock) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        if not wants_stop(envelope):
            return
        event = envelope.event()
        kind = _STOPS[type(event)]
        request_id = str(getattr(event, "request_id"))  # noqa: B009 (both stops carry it)
        await service.stop(session, request_id=request_id, kind=kind, now=clock.now())

    return handle
