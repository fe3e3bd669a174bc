"""Table tests of grant-worker's pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from elevate_grant_worker.domain import (
    Action,
    AssignmentState,
    GrantState,
    TripleView,
    on_activation_due,
    on_approved,
    on_stop,
    plan,
    removal_keeps_access,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
A, P, C, D = (
    AssignmentState.ABSENT,
    AssignmentState.PRESENT,
    AssignmentState.CREATING,
    AssignmentState.DELETING,
)


@pytest.mark.parametrize(
    ("start", "end", "stopped", "expected"),
    [
        (NOW + H, NOW + 2 * H, False, "schedule"),
        (NOW - H, NOW + H, False, "activate_now"),
        (NOW, NOW + H, False, "activate_now"),
        (NOW - 2 * H, NOW - H, False, "lapsed"),  # replay or late approval
        (NOW - 2 * H, NOW, False, "lapsed"),
        (NOW + H, NOW + 2 * H, True, "stopped"),  # cancelled before the approval arrived
    ],
)
def test_on_approved(start: datetime, end: datetime, stopped: bool, expected: str) -> None:
    assert on_approved(start=start, end=end, now=NOW, stopped=stopped) == expected


@pytest.mark.parametrize(
    ("state", "end", "expected"),
    [
        (GrantState.SCHEDULED, NOW + H, GrantState.ACTIVATING),
        (GrantState.SCHEDULED, NOW, GrantState.LAPSED),
        (GrantState.CANCELLED, NOW + H, None),
        (GrantState.ACTIVE, NOW + H, None),
        (GrantState.REVOKING, NOW + H, None),
    ],
)
def test_on_activation_due(state: GrantState, end: datetime, expected: GrantState | None) -> None:
    assert on_activation_due(state=state, end=end, now=NOW) == expected


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (GrantState.SCHEDULED, "cancelled", GrantState.CANCELLED),
        (GrantState.SCHEDULED, "revoked", GrantState.CANCELLED),
        (GrantState.SCHEDULED, "expired", GrantState.LAPSED),
        (GrantState.ACTIVATING, "cancelled", GrantState.REVOKING),
        (GrantState.ACTIVE, "expired", GrantState.REVOKING),
        (GrantState.ACTIVE, "revoked", GrantState.REVOKING),
        (GrantState.REVOKING, "revoked", None),
        (GrantState.ENDED, "revoked", None),
        (GrantState.FAILED, "expired", None),
    ],
)
def test_on_stop(state: GrantState, reason: str, expected: GrantState | None) -> None:
    assert on_stop(state=state, reason=reason) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        # intents are resumed before anything else
        (TripleView(C, revoking=1), Action.RESUME_CREATE),
        (TripleView(D, activating=1), Action.RESUME_DELETE),
        # activation
        (TripleView(A, activating=1), Action.CREATE),
        (TripleView(P, activating=1, active=1), Action.SETTLE),  # joins a held assignment
        (TripleView(P, active=2), Action.NONE),
        # overlaps: another holder keeps it
        (TripleView(P, active=1, revoking=1), Action.SETTLE),
        (TripleView(P, revoking=2), Action.DELETE),
        # standing: never deleted
        (TripleView(P, revoking=1, standing=True), Action.SETTLE),
        (TripleView(P, standing=True), Action.NONE),
        # nothing holds a present assignment of ours: delete
        (TripleView(P), Action.DELETE),
        (TripleView(A, revoking=1), Action.SETTLE),
        (TripleView(A), Action.NONE),
    ],
)
def test_plan(view: TripleView, expected: Action) -> None:
    assert plan(view) == expected


@pytest.mark.parametrize(
    ("view", "keeps"),
    [
        (TripleView(P, active=1), True),
        (TripleView(P, standing=True), True),
        (TripleView(P, revoking=1), False),
    ],
)
def test_removal_keeps_access(view: TripleView, keeps: bool) -> None:
    assert removal_keeps_access(view) is keeps
