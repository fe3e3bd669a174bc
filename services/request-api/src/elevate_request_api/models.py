"""request-api's tables: requests (the read model), the events they are folded from,
their timelines, correlated activity, and idempotency keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from elevate_core.db import Base, UTCDateTime
from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column


class AccessRequest(Base):
    __tablename__ = "requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    requester_user_name: Mapped[str] = mapped_column(String(128), index=True)
    requester_user_id: Mapped[str] = mapped_column(String(128))
    requester_email: Mapped[str | None] = mapped_column(String(320))
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    account_name: Mapped[str | None] = mapped_column(String(255))
    ou_path: Mapped[str] = mapped_column(String(1024), default="")
    permission_set_name: Mapped[str] = mapped_column(String(64))
    permission_set_arn: Mapped[str] = mapped_column(String(255))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    justification: Mapped[str] = mapped_column(Text)
    ticket: Mapped[str | None] = mapped_column(String(128))
    matched_rule: Mapped[str] = mapped_column(String(128))
    approval_rule: Mapped[str] = mapped_column(String(128))
    approver_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    required_approvals: Mapped[int] = mapped_column(Integer, default=0)
    policy_version: Mapped[str] = mapped_column(String(64))
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    review: Mapped[str | None] = mapped_column(String(16))  # break-glass: pending | done
    status: Mapped[str] = mapped_column(String(32), index=True)
    approvers: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Identity Store user ids of the approvers: visibility goes by id (names are mutable).
    # Nullable only so the column could be added in place (SQLite would rebuild the table).
    approver_ids: Mapped[list[str] | None] = mapped_column(JSON, default=list)
    # GrantEnded.sessions_valid_until: the end of sessions that outlive the access (no cut).
    sessions_valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # GrantEnded.sessions_cut (nullable: added in place, as approver_ids was).
    sessions_cut: Mapped[bool | None] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_requests_requester_created", "requester_user_name", "created_at"),)


class TimelineEntry(Base):
    __tablename__ = "request_timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_id: Mapped[str | None] = mapped_column(String(255))  # the event it shows


class UncoveredActivity(Base):
    """A CloudTrail action in a managed role that nothing covers (from the audit topic)."""

    __tablename__ = "uncovered_activity"
    __table_args__ = (
        Index("ix_uncovered_activity_account_permission_set", "account_id", "permission_set"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    account_id: Mapped[str] = mapped_column(String(12))
    permission_set: Mapped[str | None] = mapped_column(String(64))
    session_name: Mapped[str | None] = mapped_column(String(64))  # the role session's name
    user_id: Mapped[str | None] = mapped_column(String(128))  # the Identity Store user, if known
    operation: Mapped[str] = mapped_column(String(255))
    service: Mapped[str | None] = mapped_column(String(255))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str | None] = mapped_column(String(160))
    record_uid: Mapped[str] = mapped_column(String(255))


class ActivityRecord(Base):
    """A CloudTrail action correlated to a request (from the audit topic)."""

    __tablename__ = "request_activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: activity may arrive before its request (topics are not ordered).
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    operation: Mapped[str] = mapped_column(String(255))
    service: Mapped[str | None] = mapped_column(String(255))
    severity: Mapped[str | None] = mapped_column(String(32))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    record_uid: Mapped[str] = mapped_column(String(255))
    # "Success", or "Failure (AccessDenied)"; None for rows from before migration 0006.
    result: Mapped[str | None] = mapped_column(String(160), default=None)
    # After its grant ended (audit-ingest's outlived-grant finding).
    outlived: Mapped[bool | None] = mapped_column(Boolean, default=False)


class RequestEvent(Base):
    """Every event known for a request: the read model is a fold over these (domain.py),
    so an event that arrives before its request is kept, not lost or dead-lettered."""

    __tablename__ = "request_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    type: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    user_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
