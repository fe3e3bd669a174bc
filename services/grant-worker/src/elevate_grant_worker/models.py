"""grant-worker's tables.

- `gw_grants`: one row per approved request (grant id = uuid5 of the request id, so a
  replay into an empty database names grants the same), with its state machine.
- `gw_assignments`: one row per assignment triple (account, permission set, user) that
  Elevate ever touched: what AWS holds (`absent`/`present`) and the recorded intent of
  an AWS write in progress (`creating`/`deleting`, with AWS's request id once known).
- `gw_standing`: assignments never removed (policy list or baseline found in AWS).
- `gw_stops`: cancel/revoke seen before the approval (the topics are not ordered
  against each other), so a late approval never activates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elevate_core.db import Base, UTCDateTime
from sqlalchemy import JSON as SAJSON
from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class Grant(Base):
    __tablename__ = "gw_grants"

    grant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    account_id: Mapped[str] = mapped_column(String(32))
    permission_set_arn: Mapped[str] = mapped_column(String(255))
    principal_id: Mapped[str] = mapped_column(String(128))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    snapshot: Mapped[dict[str, Any]] = mapped_column(SAJSON)
    state: Mapped[str] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(String(16))
    stop_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assignment_removed: Mapped[bool | None] = mapped_column(Boolean)
    failure: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_gw_grants_triple", "account_id", "permission_set_arn", "principal_id"),
        Index("ix_gw_grants_state", "state"),
    )


class Assignment(Base):
    __tablename__ = "gw_assignments"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    permission_set_arn: Mapped[str] = mapped_column(String(255), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # absent | present | creating | deleting
    request_id: Mapped[str | None] = mapped_column(String(128))  # AWS's, once known
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_gw_assignments_state", "state"),)


class Standing(Base):
    __tablename__ = "gw_standing"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    permission_set_arn: Mapped[str] = mapped_column(String(255), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # baseline | policy
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Stop(Base):
    __tablename__ = "gw_stops"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # cancelled | revoked
    at: Mapped[datetime] = mapped_column(UTCDateTime)
