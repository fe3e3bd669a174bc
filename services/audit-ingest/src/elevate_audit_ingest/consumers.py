"""Kafka handlers: grant events (CloudEvents) build the grant index; CloudTrail records
(raw mode, claimed by `eventID`, content and position) are correlated and turned into OCSF
records produced in Kafka transactions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elevate_core.clock import Clock
from elevate_core.events.envelope import Envelope
from elevate_core.kafka.consumer import Handler
from elevate_core.kafka.transactional import BatchHandler, Delivery, Output
from elevate_core.outbox import Outbox
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest.domain import digest_of_key, record_key
from elevate_audit_ingest.grant_index import record_grant_event
from elevate_audit_ingest.lookups import Received
from elevate_audit_ingest.service import CorrelationConfig, handle_batch, parse


def cloudtrail_key(data: dict[str, Any]) -> str | None:
    """Deduplication key of a raw record (or of the record inside an EventBridge envelope):
    eventID and content digest, so a record reusing another's eventID cannot suppress it."""
    return record_key(data)


def cloudtrail_handler(*, topic: str, config: CorrelationConfig, clock: Clock) -> BatchHandler:
    """A partition's batch of records: claimed, correlated and mapped in one database
    transaction; the OCSF records (on `topic`) go out in the batch's Kafka transaction."""

    async def handle(session: AsyncSession, deliveries: Sequence[Delivery]) -> Sequence[Output]:
        # The envelope's id is the dedupe key cloudtrail_key made: its digest is reused.
        batch = [
            Received(parse(d.envelope.data, digest_of_key(d.envelope.id)), d.position)
            for d in deliveries
        ]
        return await handle_batch(session, batch, config=config, topic=topic, now=clock.now())

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
