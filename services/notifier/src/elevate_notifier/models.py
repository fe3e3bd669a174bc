"""notifier's tables: what it knows of each request, notices waiting for a request it
has not read yet, and the deliveries — its outbox of what it sends, one row per event,
channel and recipient (that uniqueness is the dedupe: one event is never sent twice)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elevate_core.db import Base, UTCDateTime
from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

_ID = BigInteger().with_variant(Integer, "sqlite")


class KnownRequest(Base):
    """A request as submitted (`RequestDetails` as JSON) and where it stands."""

    __tablename__ = "notifier_requests"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    approval_rule: Mapped[str | None] = mapped_column(String(256))
    # pending | active | over — "ending soon" is only said of an active grant.
    state: Mapped[str] = mapped_column(String(16), default="pending")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ParkedNotice(Base):
    """A notice about a request not read yet (the decisions topic ran ahead of the
    requests topic): sent when the request's submission arrives."""

    __tablename__ = "notifier_parked"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(36), index=True)
    notice: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    __tablename__ = "notifier_deliveries"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))  # slack | email | webhook
    # slack: channel:<id> | email:<address> | update:<channel>:<ts>; email: an address;
    # webhook: the webhook's name.
    target: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(36))
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(8), default="pending")  # pending|sent|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Where a Slack message went, so its outcome can update it later.
    slack_channel: Mapped[str | None] = mapped_column(String(64))
    slack_ts: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        UniqueConstraint("event_id", "channel", "target", name="uq_notifier_deliveries_once"),
        Index("ix_notifier_deliveries_due", "channel", "status", "due_at"),
        Index("ix_notifier_deliveries_request", "request_id", "kind"),
    )
