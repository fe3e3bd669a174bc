"""Every event of ARCHITECTURE.md §2, one class each. JSON Schemas in docs/events/ are
generated from these (`python -m elevate_core.events.schemas`); a test fails on drift.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from elevate_core.events.base import Event
from elevate_core.events.topics import Topics

AccountId = str  # 12 digits; validated where requests enter (request-api)


class Person(BaseModel):
    """Someone known to the Identity Store."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_name: str
    user_id: str
    email: str | None = None


class RequestDetails(BaseModel):
    """What a requester asked for, as submitted."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: UUID
    requester: Person
    account_id: AccountId
    account_name: str | None = None
    permission_set_name: str
    permission_set_arn: str
    start: AwareDatetime
    end: AwareDatetime
    justification: str
    ticket: str | None = None
    matched_rule: str
    policy_version: str
    break_glass: bool = False


class RequestSnapshot(RequestDetails):
    """The request as approved: what grant-worker acts on and every grant event carries."""

    approvers: tuple[str, ...] = ()
    approval_rule: str | None = None
    approval_policy_version: str | None = Field(
        default=None,
        description="The policy version in force when the request was approved "
        "(policy_version is the one it was submitted under)",
    )


# ---- elevate.requests.v1 (writer: request-api) ----


class _RequestsEvent(Event):
    topic: ClassVar[Topics] = Topics.REQUESTS


class RequestSubmitted(RequestDetails, _RequestsEvent):
    # The terms request-api checked it under, so its read model derives from events alone.
    ou_path: str | None = None
    approval_rule: str | None = None
    approver_groups: tuple[str, ...] = ()
    required_approvals: int | None = None


class RequestCancelled(_RequestsEvent):
    security_relevant = True
    request_id: UUID
    cancelled_by: Person
    reason: str | None = None


class DecisionSubmitted(_RequestsEvent):
    security_relevant = True
    request_id: UUID
    approver: Person
    decision: Literal["approve", "reject"]
    comment: str | None = None
    policy_version: str | None = Field(
        default=None, description="The policy version request-api checked the decision under"
    )


class RevokeRequested(_RequestsEvent):
    security_relevant = True
    request_id: UUID
    requested_by: Person
    reason: str | None = None


class BreakGlassReviewed(_RequestsEvent):
    """A break-glass request's after-the-fact review, completed by an auditor or admin."""

    security_relevant = True
    request_id: UUID
    reviewer: Person
    comment: str
    review: Literal["done"] = "done"


class AuditTrailRead(_RequestsEvent):
    """Somebody read Elevate's oversight surface: the request history (a page or a CSV
    export) or the policy (as loaded, or explained). Who looks at the evidence is evidence."""

    security_relevant = True
    reader: Person
    resource: Literal["requests", "policy", "policy-explain"]
    format: Literal["json", "csv"] = "json"
    # Any JSON value: a later release may record a filter that is not a string, and this
    # one must still read it (tolerant reader).
    filters: dict[str, Any] = Field(
        default_factory=dict, description="The query as asked (filters, cursor, limit)"
    )


# ---- elevate.decisions.v1 (writer: approval) ----


class DecidedUnder(BaseModel):
    """Which policy approval decided under, and whether the cause named another one."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    policy_version: str
    cause_policy_version: str | None = None
    differed: bool = False


class _DecisionsEvent(Event):
    topic: ClassVar[Topics] = Topics.DECISIONS
    decided_under: DecidedUnder | None = None


class ApprovalRequested(_DecisionsEvent):
    request_id: UUID
    approver_groups: tuple[str, ...]
    required_approvals: int = Field(ge=1)
    expires_at: AwareDatetime | None = None


class DecisionRecorded(_DecisionsEvent):
    request_id: UUID
    approver: Person
    decision: Literal["approve", "reject"]
    comment: str | None = None
    approvals_so_far: int = Field(ge=0)
    required_approvals: int = Field(ge=1)


class DecisionRefused(_DecisionsEvent):
    request_id: UUID
    approver: Person
    reason: Literal["requester", "not_an_approver", "already_decided", "request_final"]
    detail: str | None = None


class RequestApproved(_DecisionsEvent):
    security_relevant = True
    snapshot: RequestSnapshot
    auto_approved: bool = False


class RequestRejected(_DecisionsEvent):
    security_relevant = True
    request_id: UUID
    rejected_by: Person
    comment: str | None = None
    reason_code: str | None = Field(
        default=None,
        description="Set when approval itself rejected the request: the re-check's reason "
        "code (not_eligible, duration_too_long, permission_set_arn_mismatch, …; "
        "docs/approval.md)",
    )


class RequestExpired(_DecisionsEvent):
    security_relevant = True
    request_id: UUID
    pending_since: AwareDatetime
    expired_at: AwareDatetime


class BreakGlassUsed(_DecisionsEvent):
    """High severity, audit-worthy: break-glass access was granted without a human
    approval and must be reviewed afterwards by `review_groups`."""

    security_relevant = True

    request_id: UUID
    requester: Person
    account_id: AccountId
    account_name: str | None = None
    permission_set_name: str
    start: AwareDatetime
    end: AwareDatetime
    justification: str
    ticket: str | None = None
    matched_rule: str
    review_groups: tuple[str, ...] = ()
    policy_version: str
    severity: Literal["high"] = "high"
    review: Literal["pending"] = "pending"


# ---- elevate.grants.v1 (writer: grant-worker) ----


class _GrantEvent(Event):
    topic: ClassVar[Topics] = Topics.GRANTS

    grant_id: UUID
    snapshot: RequestSnapshot


class GrantScheduled(_GrantEvent):
    activates_at: AwareDatetime


class GrantActivated(_GrantEvent):
    security_relevant = True
    activated_at: AwareDatetime
    aws_request_id: str | None = None


class GrantFailed(_GrantEvent):
    security_relevant = True
    reason: str
    aws_error_code: str | None = None
    reason_code: str | None = Field(
        default=None,
        description="Set when the grant failed its re-check (no AWS call was made): the "
        "reason code (user_unknown, duration_too_long, management_account, …; "
        "docs/grant-worker.md)",
    )


class GrantEnded(_GrantEvent):
    security_relevant = True
    reason: Literal["expired", "revoked", "cancelled", "drift"]
    ended_at: AwareDatetime
    assignment_removed: bool = Field(
        description="False when another grant or a standing assignment still holds it"
    )
    sessions_cut: bool = Field(
        default=False,
        description=(
            "True when the permission set is opted in to the session cut: role sessions "
            "issued before ended_at are being denied (SessionCutRefused says if that fails). "
            "False: sessions already open work until the permission set's session duration "
            "from their issue runs out"
        ),
    )
    sessions_valid_until: AwareDatetime | None = Field(
        default=None,
        description=(
            "When sessions_cut is false and the assignment was removed: until when role "
            "sessions already issued could still work (ended_at plus the permission set's "
            "session duration, or AWS's longest, 12 hours, when it could not be read)"
        ),
    )


class GrantRevocationFailed(_GrantEvent):
    security_relevant = True
    error: str
    attempts: int = Field(ge=1)
    next_attempt_at: AwareDatetime | None = None


class _AssignmentEvent(Event):
    topic: ClassVar[Topics] = Topics.GRANTS

    account_id: AccountId
    permission_set_arn: str
    permission_set_name: str | None = None
    principal_id: str
    principal_type: Literal["USER", "GROUP"] = "USER"


class DriftDetected(_AssignmentEvent):
    security_relevant = True
    kind: Literal["unexpected_assignment", "missing_assignment"]
    action: Literal["reported", "removed", "restored"]
    user_name: str | None = None


class StandingAssignmentRecorded(_AssignmentEvent):
    user_name: str | None = None
    source: Literal["baseline", "policy"]


class StandingAssignmentDropped(_AssignmentEvent):
    """A standing entry no longer backs its assignment: its baseline assignment disappeared
    from AWS (so a later re-add is drift, not standing), or the policy no longer lists it."""

    security_relevant = True
    user_name: str | None = None
    source: Literal["baseline", "policy"]
    reason: Literal["assignment_gone", "policy_removed"]


class SessionCutRefused(_AssignmentEvent):
    """The sessions already issued for a removed assignment could not be cut: they keep
    working until the permission set's session duration runs out. An operator must act."""

    security_relevant = True
    cut_at: AwareDatetime
    reason: Literal["policy_too_large", "foreign_changes_pending", "policy_unreadable"]
    detail: str
