"""approval's tables: one row per request (its decision state and the details as
submitted), and the append-only decision log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elevate_core.db import Base, UTCDateTime
from elevate_core.errors import ElevateError
from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, Mapper, mapped_column


class ApprovalRequest(Base):
    """A request as approval knows it. `details` is the submitted request
    (`RequestDetails` as JSON): the snapshot grant-worker needs is built from it."""

    __tablename__ = "approval_requests"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    requester_user_name: Mapped[str] = mapped_column(String(128))
    requester_user_id: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(String(12))
    permission_set_name: Mapped[str] = mapped_column(String(64))
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending | approved | rejected | expired | cancelled
    status: Mapped[str] = mapped_column(String(16))
    # Break-glass: "pending" until someone reviews it afterwards.
    review: Mapped[str | None] = mapped_column(String(16))
    # The governing eligibility and approval rules at the last evaluation.
    rule: Mapped[str | None] = mapped_column(String(256))
    approval_rule: Mapped[str | None] = mapped_column(String(256))
    required_approvals: Mapped[int] = mapped_column(Integer, default=0)
    submitted_policy_version: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(64))  # at the last evaluation
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expiry_timer_key: Mapped[str | None] = mapped_column(String(255))
    approvers: Mapped[list[str]] = mapped_column(JSON, default=list)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_approval_requests_status", "status"),)


class DecisionLogEntry(Base):
    """Append-only: who did what to which request, when, under which policy version.

    `outcome` is `counted` or `refused` for a human decision (with `reason` when
    refused), or the state the request moved to (`pending`, `approved`, …)."""

    __tablename__ = "approval_decision_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(32))
    actor_user_name: Mapped[str] = mapped_column(String(128))
    actor_user_id: Mapped[str] = mapped_column(String(128))
    actor_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    # A counted decider's person key (elevate_core.policy.approvals): one vote per person.
    actor_person_key: Mapped[str | None] = mapped_column(String(320))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    policy_version: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_approval_decision_log_request", "request_id", "id"),)


class AppendOnlyError(ElevateError):
    pass


@event.listens_for(DecisionLogEntry, "before_update")
@event.listens_for(DecisionLogEntry, "before_delete")
def _append_only(_mapper: Mapper[Any], _conn: Any, target: DecisionLogEntry) -> None:
    raise AppendOnlyError(f"the decision log is append-only (entry {target.id})")
