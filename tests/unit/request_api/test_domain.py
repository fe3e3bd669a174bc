"""The read model, pure: the status machine table-tested, and the fold — the same events
in any order give the same request, events before their request wait for it, and a
finished review is never reopened (ARCHITECTURE.md §2)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from elevate_core.events.base import Event
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassUsed,
    DecisionRecorded,
    DecisionSubmitted,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    GrantScheduled,
    Person,
    RequestApproved,
    RequestCancelled,
    RequestExpired,
    RequestRejected,
    RequestSnapshot,
    RequestSubmitted,
    RevokeRequested,
)
from elevate_request_api.domain import Logged, Status, after_event, fold, merge_review

S = Status
T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
ALICE = Person(user_name="alice", user_id="u-alice")
BOB = Person(user_name="bob", user_id="u-bob")
RID = UUID("6a3c1f0e-0000-4000-8000-000000000001")


def submitted(*, break_glass: bool = False) -> RequestSubmitted:
    return RequestSubmitted(
        request_id=RID,
        requester=ALICE,
        account_id="111111111111",
        account_name="payments-prod",
        permission_set_name="AdministratorAccess",
        permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
        start=T0,
        end=T0 + timedelta(hours=1),
        justification="OPS-1 incident",
        ticket="OPS-1",
        matched_rule="sre-prod-admin",
        policy_version="v1",
        break_glass=break_glass,
        ou_path="Workloads/Prod",
        approval_rule="one-sre-lead",
        approver_groups=("sre-leads",),
        required_approvals=1,
    )


_DETAILS = {
    k: v
    for k, v in submitted().model_dump().items()
    if k not in ("ou_path", "approval_rule", "approver_groups", "required_approvals")
}
SNAPSHOT = RequestSnapshot(**_DETAILS, approvers=("bob",), approval_rule="one-sre-lead")
GRANT: dict[str, Any] = {"grant_id": uuid4(), "snapshot": SNAPSHOT}


def make(cls: type[Event], reason: str | None = None) -> Event:
    """One event of each kind for the request above."""
    factories: dict[type[Event], Any] = {
        RequestApproved: lambda: RequestApproved(snapshot=SNAPSHOT),
        RequestRejected: lambda: RequestRejected(request_id=RID, rejected_by=BOB),
        RequestExpired: lambda: RequestExpired(request_id=RID, pending_since=T0, expired_at=T0),
        RequestCancelled: lambda: RequestCancelled(request_id=RID, cancelled_by=ALICE),
        GrantScheduled: lambda: GrantScheduled(**GRANT, activates_at=T0),
        GrantActivated: lambda: GrantActivated(**GRANT, activated_at=T0),
        GrantFailed: lambda: GrantFailed(**GRANT, reason="AccessDenied"),
        GrantRevocationFailed: lambda: GrantRevocationFailed(
            **GRANT, error="throttled", attempts=1
        ),
        # model_construct: a reason the schema would refuse (a newer writer's).
        GrantEnded: lambda: GrantEnded.model_construct(
            **GRANT,
            reason=reason,  # type: ignore[arg-type]
            ended_at=T0,
            assignment_removed=True,
        ),
        DecisionRecorded: lambda: DecisionRecorded(
            request_id=RID,
            approver=BOB,
            decision="approve",
            approvals_so_far=1,
            required_approvals=1,
        ),
        BreakGlassUsed: lambda: BreakGlassUsed(
            request_id=RID,
            requester=ALICE,
            account_id="111111111111",
            permission_set_name="AdministratorAccess",
            start=T0,
            end=T0,
            justification="x",
            matched_rule="bg",
            policy_version="v1",
        ),
    }
    event: Event = factories[cls]()
    return event


@pytest.mark.parametrize(
    ("current", "event", "reason", "expected"),
    [
        (S.PENDING, RequestApproved, None, S.APPROVED),
        (S.APPROVED, GrantScheduled, None, S.SCHEDULED),
        (S.PENDING, GrantScheduled, None, S.SCHEDULED),
        (S.SCHEDULED, GrantActivated, None, S.ACTIVE),
        (S.APPROVED, GrantActivated, None, S.ACTIVE),
        (S.ACTIVE, GrantEnded, "expired", S.ENDED),
        (S.ACTIVE, GrantEnded, "revoked", S.REVOKED),
        (S.ACTIVE, GrantEnded, "cancelled", S.CANCELLED),
        (S.ACTIVE, GrantEnded, "drift", S.REVOKED),
        (S.PENDING, RequestRejected, None, S.REJECTED),
        (S.PENDING, RequestExpired, None, S.EXPIRED),
        (S.PENDING, RequestCancelled, None, S.CANCELLED),
        (S.SCHEDULED, RequestCancelled, None, S.CANCELLED),
        (S.APPROVED, GrantFailed, None, S.ERROR),
        (S.ACTIVE, GrantRevocationFailed, None, S.REVOCATION_FAILED),
        (S.REVOCATION_FAILED, GrantRevocationFailed, None, S.REVOCATION_FAILED),
        (S.REVOCATION_FAILED, GrantEnded, "expired", S.ENDED),
        # Late or replayed events never move a settled request backwards.
        (S.REJECTED, RequestApproved, None, S.REJECTED),
        (S.APPROVED, RequestExpired, None, S.APPROVED),
        (S.ENDED, GrantActivated, None, S.ENDED),
        (S.ENDED, GrantRevocationFailed, None, S.ENDED),
        (S.ACTIVE, GrantScheduled, None, S.ACTIVE),
        (S.ACTIVE, RequestCancelled, None, S.ACTIVE),
        (S.CANCELLED, RequestApproved, None, S.CANCELLED),
        # A cancel that lost the race with activation: the access exists, show it.
        (S.CANCELLED, GrantActivated, None, S.ACTIVE),
        (S.PENDING, DecisionRecorded, None, S.PENDING),
        (S.PENDING, BreakGlassUsed, None, S.PENDING),
    ],
)
def test_transitions(
    current: Status, event: type[Event], reason: str | None, expected: Status
) -> None:
    assert after_event(current, make(event, reason)) is expected


def test_unknown_end_reason_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown GrantEnded reason"):
        after_event(S.ACTIVE, make(GrantEnded, "because"))


def _lifecycle() -> list[Logged]:
    at = iter(T0 + timedelta(seconds=i) for i in range(100))
    events: list[Event] = [
        submitted(),
        ApprovalRequested(request_id=RID, approver_groups=("sre-leads",), required_approvals=1),
        DecisionSubmitted(request_id=RID, approver=BOB, decision="approve"),
        make(DecisionRecorded),
        make(RequestApproved),
        make(GrantScheduled),
        make(GrantActivated),
        RevokeRequested(request_id=RID, requested_by=ALICE, reason="done"),
        make(GrantEnded, "revoked"),
    ]
    return [Logged(f"e{i}", next(at), e) for i, e in enumerate(events)]


def _shape(events: list[Logged]) -> tuple[Any, ...]:
    view = fold(events)
    assert view is not None
    return (
        view.status,
        sorted(view.approvers),
        view.review,
        view.created_at,
        view.updated_at,
        view.approval_rule,
        view.timeline,
    )


def test_the_same_events_in_any_order_give_the_same_request() -> None:
    events = _lifecycle()
    expected = _shape(events)
    assert expected[0] is S.REVOKED
    view = fold(events)
    assert view is not None
    assert [t.action for t in view.timeline] == [
        "submitted",
        "approval_requested",
        "approve_submitted",
        "decision_recorded",
        "approved",
        "grant_scheduled",
        "grant_activated",
        "revoke_requested",
        "grant_ended_revoked",
    ]
    assert [t.status for t in view.timeline][-3:] == [S.ACTIVE, S.ACTIVE, S.REVOKED]
    # Every 997th of the 362,880 orders (a spread sample, deterministic).
    for order in itertools.islice(itertools.permutations(events), 0, None, 997):
        assert _shape(list(order)) == expected


def test_events_before_their_request_wait_for_it() -> None:
    events = _lifecycle()
    carrying = RequestSubmitted | RequestApproved | GrantScheduled | GrantActivated | GrantEnded
    early = [e for e in events if not isinstance(e.event, carrying)]
    assert fold(early) is None  # nothing yet says what was requested: kept, not applied
    late = [e for e in events if e not in early]
    assert _shape([*early, *late]) == _shape(events)


def test_a_request_is_shown_from_a_snapshot_when_its_submission_is_gone() -> None:
    events = [e for e in _lifecycle() if not isinstance(e.event, RequestSubmitted)]
    view = fold(events)
    assert view is not None
    assert view.status is S.REVOKED
    assert view.approval_rule == "one-sre-lead"


def test_a_review_once_done_is_never_reopened() -> None:
    bg = submitted(break_glass=True)
    view = fold([Logged("s", T0, bg), Logged("b", T0, make(BreakGlassUsed))])
    assert view is not None
    assert view.review == "pending"
    assert merge_review("done", view.review) == "done"
    assert merge_review(None, "pending") == "pending"


@pytest.mark.parametrize(
    ("cut", "valid_until"),
    [(False, T0 + timedelta(hours=4)), (True, None)],
    ids=["no-cut: sessions outlive the end", "cut: nothing outlives it"],
)
def test_the_request_says_until_when_sessions_outlive_the_access(
    cut: bool, valid_until: datetime | None
) -> None:
    ended = GrantEnded(
        **GRANT,
        reason="revoked",
        ended_at=T0,
        assignment_removed=True,
        sessions_cut=cut,
        sessions_valid_until=valid_until,
    )
    events = [*_lifecycle()[:-1], Logged("end", T0 + timedelta(minutes=5), ended)]
    view = fold(events)
    assert view is not None
    assert view.status is S.REVOKED
    assert view.sessions_valid_until == valid_until
