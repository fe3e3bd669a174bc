"""Kafka handlers: grant events (CloudEvents) build the grant index; CloudTrail records
(raw mode, deduplicated on `eventID` and content) are correlated and turned into OCSF records."""

from __future__ import annotations

from typing import Any

from elevate_core.clock import Clock
from elevate_core.events.envelope import Envelope
from elevate_core.kafka.consumer import Handler
from elevate_core.outbox import Outbox
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest.domain import record_key
from elevate_audit_ingest.grant_index import record_grant_event
from elevate_audit_ingest.service import CorrelationConfig, handle_record


def cloudtrail_key(data: dict[str, Any]) -> str | None:
    """Deduplication key of a raw record (or of the record inside an EventBridge envelope):
    eventID and content digest, so a record reusing another's eventID cannot suppress it."""
    return record_key(data)


def cloudtrail_handler(*, outbox: Outbox, config: CorrelationConfig, clock: Clock) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        await handle_record(
            session, data=envelope.data, outbox=outbox, config=config, now=clock.now()
        )

    return handle


def grants_handler(*, outbox: Outbox, config: CorrelationConfig, clock: Clock) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        await record_grant_event(
            session,
            event=envelope.event(),
            event_uid=envelope.id,
            outbox=outbox,
            config=config,
            now=clock.now(),
        )

    return handle
