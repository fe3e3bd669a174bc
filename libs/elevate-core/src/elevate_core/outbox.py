"""Transactional outbox (ARCHITECTURE.md §3).

A service writes its state change and the events it implies in one transaction
(`Outbox.add`); `elevate_core.relay.OutboxRelay` publishes the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import JSON as SAJSON
from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from elevate_core.causes import current_cause
from elevate_core.db import Base, UTCDateTime, utcnow
from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope, encode, new_envelope
from elevate_core.events.signing import SIGNED_TOPICS, Signer
from elevate_core.notify import mark
from elevate_core.telemetry import current_traceparent

CHANNEL = "elevate_outbox"


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[list[str]]] = mapped_column(SAJSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A row Kafka kept refusing (too large, not authorised, no such topic) is moved aside:
    # `dead_at` set, a copy on the DLQ; it no longer blocks its key. Re-drive clears it.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_outbox_unsent",
            "id",
            postgresql_where=text("sent_at IS NULL AND dead_at IS NULL"),
            sqlite_where=text("sent_at IS NULL AND dead_at IS NULL"),
        ),
    )


class Outbox:
    """Writes events into the caller's transaction."""

    def __init__(
        self, *, source: str, topic_prefix: str = "", signer: Signer | None = None
    ) -> None:
        self.source = source
        self.topic_prefix = topic_prefix
        # Signs events of the signed topics (elevate_core.events.signing); without one they
        # go out unsigned and every reader dead-letters them (settings require it in prod).
        self.signer = signer

    async def add(
        self,
        session: AsyncSession,
        event: Event,
        *,
        subject: str | None,
        key: str | None = None,
        time: datetime | None = None,
    ) -> str:
        """Queue `event`; it is published only if the transaction commits. Returns ce_id.

        Inside a cause (a consumed event, a fired timer) the id derives from the cause."""
        envelope = await self.add_envelope(session, event, subject=subject, key=key, time=time)
        return envelope.id

    async def add_envelope(
        self,
        session: AsyncSession,
        event: Event,
        *,
        subject: str | None,
        key: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        """`add`, returning the whole envelope (for a writer that also folds it locally)."""
        cause = current_cause()
        envelope = new_envelope(
            event,
            source=self.source,
            subject=subject,
            time=time,
            id=cause.next_id(event.ce_type) if cause is not None else None,
        )
        # add_raw attaches the current trace context (traceparent, tracestate).
        value, encoded = encode(envelope)
        headers = [(k, v.decode()) for k, v in encoded]
        if self.signer is not None and event.topic in SIGNED_TOPICS:
            headers += self.signer.sign(value, dict(headers))
        await self.add_raw(
            session,
            topic=event.topic,
            key=key if key is not None else subject,
            value=value,
            headers=headers,
        )
        return envelope

    async def add_raw(
        self,
        session: AsyncSession,
        *,
        topic: str,
        key: str | None,
        value: bytes,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Queue a message that is not an Elevate CloudEvent (e.g. an OCSF record for a
        SIEM): the value and headers go out as given, plus `traceparent`. Same table, same
        relay, so ordering per key and at-least-once delivery are those of `add`."""
        traceparent, tracestate = current_traceparent()
        row_headers = [[k, v] for k, v in headers]
        if traceparent:
            row_headers.append(["traceparent", traceparent])
        if tracestate:
            row_headers.append(["tracestate", tracestate])
        session.add(
            OutboxMessage(
                topic=f"{self.topic_prefix}{topic}",
                key=key,
                value=value,
                headers=row_headers,
                created_at=utcnow(),
            )
        )
        await mark(session, CHANNEL)
