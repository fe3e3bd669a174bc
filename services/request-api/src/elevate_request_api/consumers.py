"""The read model: requests, decisions and grants topics → status, timeline, activity."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from elevate_core.errors import NotYetError
from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassUsed,
    DecisionRecorded,
    DecisionRefused,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    RequestApproved,
    RequestCancelled,
    RequestDetails,
    RequestExpired,
    RequestRejected,
    RequestSnapshot,
    RequestSubmitted,
)
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api.models import AccessRequest, ActivityRecord
from elevate_request_api.service import add_timeline
from elevate_request_api.status import Status, after_event


def request_id_of(event: Event) -> uuid.UUID | None:
    rid = getattr(event, "request_id", None)
    if isinstance(rid, uuid.UUID):
        return rid
    snapshot = getattr(event, "snapshot", None)
    return snapshot.request_id if isinstance(snapshot, RequestSnapshot) else None


def _row_from(details: RequestDetails, at: datetime) -> AccessRequest:
    """Rebuild a request row from an event that carries it (replay into an empty DB)."""
    snapshot = details if isinstance(details, RequestSnapshot) else None
    return AccessRequest(
        id=details.request_id,
        requester_user_name=details.requester.user_name,
        requester_user_id=details.requester.user_id,
        requester_email=details.requester.email,
        account_id=details.account_id,
        account_name=details.account_name,
        ou_path="",
        permission_set_name=details.permission_set_name,
        permission_set_arn=details.permission_set_arn,
        start=details.start,
        end=details.end,
        justification=details.justification,
        ticket=details.ticket,
        matched_rule=details.matched_rule,
        approval_rule=(snapshot.approval_rule or "") if snapshot else "",
        approver_groups=[],
        required_approvals=0,
        policy_version=details.policy_version,
        break_glass=details.break_glass,
        review="pending" if details.break_glass else None,
        status=Status.PENDING,
        approvers=list(snapshot.approvers) if snapshot else [],
        created_at=at,
        updated_at=at,
    )


def _actor(event: Event) -> str:
    for attr in ("approver", "rejected_by", "cancelled_by", "requested_by"):
        who = getattr(event, attr, None)
        if who is not None:
            return str(who.user_name)
    return "grant-worker" if type(event).__name__.startswith("Grant") else "approval"


def _comment(event: Event) -> str | None:
    for attr in ("comment", "reason", "detail", "error"):
        value: Any = getattr(event, attr, None)
        if isinstance(value, str):
            return value
    return None


async def project(session: AsyncSession, envelope: Envelope) -> None:
    """Apply one event to the read model (runs in the consumer's transaction)."""
    event = envelope.event()
    request_id = request_id_of(event)
    if request_id is None:
        return  # drift and standing-assignment events concern no request
    name = type(event).__name__
    row = await session.get(AccessRequest, request_id, with_for_update=True)
    if row is None:
        carried = event if isinstance(event, RequestSubmitted) else getattr(event, "snapshot", None)
        if not isinstance(carried, RequestDetails):
            # Its request has not reached us yet (topics are ordered only within themselves).
            raise NotYetError(f"{name} for unknown request {request_id}; retrying")
        row = _row_from(carried, envelope.time)
        session.add(row)
        await session.flush()
        if isinstance(event, RequestSubmitted):
            await add_timeline(
                session,
                row,
                at=envelope.time,
                actor=event.requester.user_name,
                action="submitted",
                comment=event.justification,
            )
            return
    if name in ("DecisionSubmitted", "RevokeRequested"):
        return  # our own events: their timeline entries were written when they were made
    if isinstance(event, RequestCancelled) and row.status == Status.CANCELLED:
        return
    if isinstance(event, RequestSubmitted | DecisionRefused):
        if isinstance(event, DecisionRefused):
            await add_timeline(
                session,
                row,
                at=envelope.time,
                actor=event.approver.user_name,
                action="decision_refused",
                comment=event.reason,
            )
        return
    reason = event.reason if isinstance(event, GrantEnded) else None
    row.status = after_event(Status(row.status), name, reason=reason)
    if isinstance(event, ApprovalRequested):
        row.approver_groups = list(event.approver_groups)
        row.required_approvals = event.required_approvals
    if isinstance(event, DecisionRecorded) and event.decision == "approve":
        row.approvers = sorted({*row.approvers, event.approver.user_name})
    if isinstance(event, BreakGlassUsed):
        row.review = event.review
    if isinstance(event, RequestApproved):
        row.approvers = sorted({*row.approvers, *event.snapshot.approvers})
    row.updated_at = max(row.updated_at, envelope.time)
    action = _ACTIONS.get(name, name)
    if isinstance(event, GrantEnded):
        action = f"grant_ended_{event.reason}"
    detail = (
        _comment(event)
        if isinstance(
            event,
            GrantFailed
            | GrantRevocationFailed
            | RequestRejected
            | RequestCancelled
            | DecisionRecorded
            | RequestExpired,
        )
        else None
    )
    await add_timeline(
        session, row, at=envelope.time, actor=_actor(event), action=action, comment=detail
    )


_ACTIONS = {
    "ApprovalRequested": "approval_requested",
    "DecisionRecorded": "decision_recorded",
    "RequestApproved": "approved",
    "RequestRejected": "rejected",
    "RequestExpired": "expired",
    "RequestCancelled": "cancelled",
    "GrantScheduled": "grant_scheduled",
    "GrantActivated": "grant_activated",
    "GrantFailed": "grant_failed",
    "GrantRevocationFailed": "revocation_failed",
    "BreakGlassUsed": "break_glass_used",
}


_SEVERITY = {
    0: "unknown",
    1: "informational",
    2: "low",
    3: "medium",
    4: "high",
    5: "critical",
    6: "fatal",
}


def audit_record_key(data: dict[str, Any]) -> str | None:
    """Dedupe key of an OCSF record on elevate.audit.v1."""
    metadata = data.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return str(uid) if uid else None


async def project_activity(session: AsyncSession, envelope: Envelope) -> None:
    """Attach a correlated CloudTrail action (OCSF API Activity) to its request."""
    record = envelope.data
    if record.get("class_uid") != 6003:
        return  # grant assign/revoke records: the timeline already has those facts
    correlation = (record.get("metadata") or {}).get("correlation_uid")
    try:
        request_id = uuid.UUID(str(correlation))
    except ValueError:
        return  # activity no grant covers: not part of any request's evidence
    if await session.get(AccessRequest, request_id) is None:
        raise NotYetError(f"activity for unknown request {request_id}; retrying")
    api = record.get("api") or {}
    endpoint = record.get("src_endpoint") or {}
    session.add(
        ActivityRecord(
            request_id=request_id,
            at=datetime.fromtimestamp(int(record["time"]) / 1000, tz=UTC),
            operation=str(api.get("operation", "?"))[:255],
            service=((api.get("service") or {}).get("name") or None),
            severity=_SEVERITY.get(int(record.get("severity_id", 0)), "unknown"),
            source_ip=endpoint.get("ip") or endpoint.get("domain"),
            record_uid=envelope.id,
        )
    )
