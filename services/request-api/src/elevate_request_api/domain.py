"""request-api's read model, pure: a request's status, timeline and review flag are a fold
over the *set* of events known for it (ARCHITECTURE.md §2).

Topics are ordered only within themselves, so events of one request arrive in any order
(a grant event before its request, a rebuild reading topics at different speeds). The
fold therefore sorts what it has — by event time, then causal rank, then id — and starts
from the request's `RequestSubmitted` (or the first event carrying its snapshot); events
that arrive before that are kept and folded in once it comes. Folding the same set gives
the same result however it arrived: the live model and a rebuild agree row by row.

Status machine: grant events are facts about AWS and always move the status (access
that exists is shown as active even if the user asked to cancel meanwhile); decision
events only move a request that is still waiting; nothing moves a request out of a final
state except the grant-worker's own later facts about the same grant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from elevate_core.errors import PermanentError, TransientError
from elevate_core.events.base import Event
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassReviewed,
    BreakGlassUsed,
    DecisionRecorded,
    DecisionRefused,
    DecisionSubmitted,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    GrantScheduled,
    RequestApproved,
    RequestCancelled,
    RequestDetails,
    RequestExpired,
    RequestRejected,
    RequestSnapshot,
    RequestSubmitted,
    RevokeRequested,
)


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    REVOCATION_FAILED = "revocation_failed"
    ENDED = "ended"
    REVOKED = "revoked"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ERROR = "error"


FINAL = frozenset(
    {Status.ENDED, Status.REVOKED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED, Status.ERROR}
)
CANCELLABLE = frozenset({Status.PENDING, Status.APPROVED, Status.SCHEDULED})
REVOCABLE = frozenset({Status.APPROVED, Status.SCHEDULED, Status.ACTIVE, Status.REVOCATION_FAILED})
# Access in force (or maybe, where its removal failed): what "end now" ends.
IN_FORCE = frozenset({Status.ACTIVE, Status.REVOCATION_FAILED})
GRANT_END = {
    "expired": Status.ENDED,
    "revoked": Status.REVOKED,
    "cancelled": Status.CANCELLED,
    "drift": Status.REVOKED,
}
#: Break-glass review: never downgraded (a replayed BreakGlassUsed cannot reopen it).
REVIEW_RANK = {None: 0, "pending": 1, "done": 2}


# ---- errors the use cases raise (api.py maps each to one problem type) ---------------


class RequestError(PermanentError):
    """A request-api use case refused; `slug` names the reason for the problem `type`."""

    slug = "invalid-request"

    def __init__(self, message: str, *, errors: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class InvalidRequestError(RequestError):
    slug = "invalid-request"


class InvalidCursorError(InvalidRequestError):
    slug = "invalid-cursor"


class NotEligibleError(RequestError):
    slug = "not-eligible"


class NotAllowedError(RequestError):
    slug = "not-allowed"


class RequestNotFoundError(RequestError):
    slug = "not-found"


class StateConflictError(RequestError):
    slug = "conflict"


class UnknownSubjectError(RequestError):
    """An explanation asked about a user or account the directory does not have."""

    slug = "unknown-subject"


class TooManyStreamsError(RequestError):
    slug = "too-many-streams"


class SlackSignatureError(RequestError):
    """A Slack interaction without a valid signature, or with an old timestamp."""

    slug = "slack-signature"


class SlackOffError(RequestError):
    """The Slack integration is not configured on this deployment."""

    slug = "not-found"


class DirectoryUnavailableError(TransientError):
    """The AWS directory cannot answer now: the caller may retry shortly."""

    retry_after = 5.0


# ---- the status machine -----------------------------------------------------------


def _if(current: Status, allowed: Iterable[Status], then: Status) -> Status:
    return then if current in allowed else current


def _grant_exists(current: Status, then: Status) -> Status:
    # A cancelled request whose grant still got created is active until revoked.
    return current if current in FINAL and current is not Status.CANCELLED else then


def _grant_ended(_current: Status, event: GrantEnded) -> Status:
    if event.reason not in GRANT_END:
        raise ValueError(f"unknown GrantEnded reason {event.reason!r}")
    return GRANT_END[event.reason]


_TRANSITIONS: dict[type[Event], Callable[[Status, Any], Status]] = {
    RequestApproved: lambda s, _e: _if(s, {Status.PENDING}, Status.APPROVED),
    RequestRejected: lambda s, _e: _if(s, {Status.PENDING}, Status.REJECTED),
    RequestExpired: lambda s, _e: _if(s, {Status.PENDING}, Status.EXPIRED),
    RequestCancelled: lambda s, _e: _if(s, CANCELLABLE, Status.CANCELLED),
    GrantScheduled: lambda s, _e: _if(s, {Status.PENDING, Status.APPROVED}, Status.SCHEDULED),
    GrantActivated: lambda s, _e: _grant_exists(s, Status.ACTIVE),
    GrantFailed: lambda s, _e: s if s in FINAL else Status.ERROR,
    GrantRevocationFailed: lambda s, _e: _grant_exists(s, Status.REVOCATION_FAILED),
    GrantEnded: _grant_ended,
}


def after_event(current: Status, event: Event) -> Status:
    """The status after `event` is applied to `current` (dispatch on the event's type)."""
    step = _TRANSITIONS.get(type(event))
    return step(current, event) if step is not None else current


# ---- the fold -----------------------------------------------------------------------

# Causal rank: the tie-break when two events carry the same time.
_RANK: dict[type[Event], int] = {
    RequestSubmitted: 0,
    ApprovalRequested: 1,
    DecisionSubmitted: 2,
    BreakGlassUsed: 2,
    DecisionRecorded: 3,
    DecisionRefused: 3,
    RequestApproved: 4,
    RequestRejected: 4,
    RequestExpired: 4,
    RequestCancelled: 5,
    GrantScheduled: 6,
    GrantActivated: 7,
    GrantFailed: 7,
    RevokeRequested: 8,
    GrantRevocationFailed: 9,
    GrantEnded: 10,
    BreakGlassReviewed: 11,
}
_ACTIONS: dict[type[Event], str] = {
    ApprovalRequested: "approval_requested",
    DecisionRecorded: "decision_recorded",
    DecisionRefused: "decision_refused",
    RequestApproved: "approved",
    RequestRejected: "rejected",
    RequestExpired: "expired",
    RequestCancelled: "cancelled",
    GrantScheduled: "grant_scheduled",
    GrantActivated: "grant_activated",
    GrantFailed: "grant_failed",
    GrantRevocationFailed: "revocation_failed",
    BreakGlassUsed: "break_glass_used",
    BreakGlassReviewed: "break_glass_reviewed",
    RevokeRequested: "revoke_requested",
    RequestSubmitted: "submitted",
}


@dataclass(frozen=True, slots=True)
class Logged:
    """One event of a request as the read model keeps it."""

    event_id: str
    at: datetime
    event: Event

    @property
    def order(self) -> tuple[datetime, int, str]:
        return (self.at, _RANK.get(type(self.event), 99), self.event_id)


@dataclass(frozen=True, slots=True)
class TimelineItem:
    event_id: str
    at: datetime
    actor: str
    action: str
    comment: str | None
    status: Status


@dataclass(slots=True)
class View:
    """A request as the read model shows it."""

    details: RequestDetails
    created_at: datetime
    updated_at: datetime
    ou_path: str = ""
    approval_rule: str = ""
    approver_groups: list[str] = field(default_factory=list)
    required_approvals: int = 0
    status: Status = Status.PENDING
    approvers: set[str] = field(default_factory=set)  # names, for display
    approver_ids: set[str] = field(default_factory=set)  # who may see it as its approver
    review: str | None = None
    timeline: list[TimelineItem] = field(default_factory=list)
    # Where the session cut is off: until when sessions issued before the end still work.
    sessions_valid_until: datetime | None = None
    # GrantEnded.sessions_cut: the sessions issued before the end were cut.
    sessions_cut: bool = False


def request_id_of(event: Event) -> Any:
    rid = getattr(event, "request_id", None)
    if rid is not None:
        return rid
    snapshot = getattr(event, "snapshot", None)
    return snapshot.request_id if isinstance(snapshot, RequestSnapshot) else None


def _carried(event: Event) -> RequestDetails | None:
    if isinstance(event, RequestSubmitted):
        return event
    snapshot = getattr(event, "snapshot", None)
    return snapshot if isinstance(snapshot, RequestSnapshot) else None


def _base(ordered: list[Logged]) -> Logged | None:
    """The event the request starts from: its submission, else the first snapshot."""
    submitted = [e for e in ordered if isinstance(e.event, RequestSubmitted)]
    if submitted:
        return submitted[0]
    return next((e for e in ordered if _carried(e.event) is not None), None)


def fold(events: Iterable[Logged]) -> View | None:
    """The request from everything known of it; None until its base event is known."""
    ordered = sorted(events, key=lambda e: e.order)
    base = _base(ordered)
    if base is None:
        return None
    details = _carried(base.event)
    assert details is not None
    view = View(details=details, created_at=base.at, updated_at=base.at)
    if details.break_glass:
        view.review = "pending"
    if isinstance(details, RequestSubmitted):
        view.ou_path = details.ou_path or ""
        view.approval_rule = details.approval_rule or ""
        view.approver_groups = list(details.approver_groups)
        view.required_approvals = details.required_approvals or 0
    # Nothing happens to a request before it is asked for: whatever the clocks of the
    # writers say, its submission comes first.
    for logged in [base, *(e for e in ordered if e is not base)]:
        _apply(view, logged)
    return view


def _apply(view: View, logged: Logged) -> None:
    event = logged.event
    view.status = after_event(view.status, event)
    view.updated_at = max(view.updated_at, logged.at)
    if isinstance(event, ApprovalRequested):
        view.approver_groups = list(event.approver_groups)
        view.required_approvals = event.required_approvals
    elif isinstance(event, DecisionRecorded) and event.decision == "approve":
        view.approvers.add(event.approver.user_name)
        view.approver_ids.add(event.approver.user_id)
    elif isinstance(event, BreakGlassUsed | BreakGlassReviewed):
        view.review = merge_review(view.review, event.review)
    elif isinstance(event, GrantEnded):
        view.sessions_valid_until = event.sessions_valid_until
        view.sessions_cut = view.sessions_cut or event.sessions_cut
    elif isinstance(event, RequestApproved):
        view.approvers.update(event.snapshot.approvers)
        view.approval_rule = view.approval_rule or event.snapshot.approval_rule or ""
    action = _action(event)
    if action is not None:
        view.timeline.append(
            TimelineItem(
                logged.event_id, logged.at, _actor(event), action, _comment(event), view.status
            )
        )


def merge_review(current: str | None, other: str | None) -> str | None:
    """The further along of two review states (a review once done stays done)."""
    return current if REVIEW_RANK.get(current, 0) >= REVIEW_RANK.get(other, 0) else other


def _action(event: Event) -> str | None:
    if isinstance(event, DecisionSubmitted):
        return f"{event.decision}_submitted"
    if isinstance(event, GrantEnded):
        return f"grant_ended_{event.reason}"
    return _ACTIONS.get(type(event))


def _actor(event: Event) -> str:
    if isinstance(event, RequestSubmitted):
        return event.requester.user_name
    for attr in ("approver", "rejected_by", "cancelled_by", "requested_by", "reviewer"):
        who = getattr(event, attr, None)
        if who is not None:
            return str(who.user_name)
    grant = (GrantScheduled, GrantActivated, GrantFailed, GrantRevocationFailed, GrantEnded)
    return "grant-worker" if isinstance(event, grant) else "approval"


def _comment(event: Event) -> str | None:
    if isinstance(event, RequestSubmitted):
        return event.justification
    for attr in ("comment", "reason", "detail", "error"):
        value: Any = getattr(event, attr, None)
        if isinstance(value, str) and not isinstance(event, GrantEnded):
            return value
    return None
