"""audit-ingest's own tables: the grant index, standing access, records waiting for their
grant, quarantined CloudTrail files and the contents seen per eventID."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elevate_core.db import Base, UTCDateTime
from sqlalchemy import JSON as SAJSON
from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class GrantRow(Base):
    """One grant as known from `elevate.grants.v1` (the request snapshot it carries)."""

    __tablename__ = "audit_grants"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    user_email: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[str] = mapped_column(String(32))
    account_name: Mapped[str | None] = mapped_column(String(255))
    permission_set_name: Mapped[str] = mapped_column(String(255))
    permission_set_arn: Mapped[str] = mapped_column(String(2048))
    scheduled_start: Mapped[datetime] = mapped_column(UTCDateTime)
    scheduled_end: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    justification: Mapped[str] = mapped_column(Text)
    ticket: Mapped[str | None] = mapped_column(String(255))
    approvers: Mapped[list[str]] = mapped_column(SAJSON)
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_audit_grants_account", "account_id", "permission_set_name"),)


class StandingRow(Base):
    """A standing (baseline or policy) user assignment: covered, never flagged."""

    __tablename__ = "audit_standing"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    permission_set_arn: Mapped[str] = mapped_column(String(2048), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    permission_set_name: Mapped[str | None] = mapped_column(String(255))
    user_name: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))


class PendingRecord(Base):
    """A record in a managed role that no known grant covers yet: it waits until a grant
    event covers it or until `deadline` (a durable timer), then is emitted as uncovered."""

    __tablename__ = "audit_pending_records"

    # The record key (eventID and content digest, domain.record_key): two records sharing
    # an eventID wait side by side. Rows from before audit_0002 hold the bare eventID.
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    record: Mapped[dict[str, Any]] = mapped_column(SAJSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)


class QuarantinedFile(Base):
    """A CloudTrail file (or notice) that could not be read; the object stays in S3."""

    __tablename__ = "audit_quarantined_files"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024))
    error: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    quarantined_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecordDigest(Base):
    """Each distinct content seen under an eventID: a second content under one eventID is
    a conflict (a forged or altered copy), flagged on every record of that eventID emitted
    after it is known, so neither copy hides the other."""

    __tablename__ = "audit_record_digests"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    delivery: Mapped[str | None] = mapped_column(String(1400))  # s3://bucket/key, if any
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    # topic:partition:offset of the delivery that first brought it (None before audit_0003)
    claimed_by: Mapped[str | None] = mapped_column(String(300))
