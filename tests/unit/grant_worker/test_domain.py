"""Table tests of grant-worker's pure decisions, with an injected `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from elevate_grant_worker.domain import (
    AssignmentState,
    Ending,
    GrantFacts,
    GrantState,
    Plan,
    Step,
    TripleFacts,
    gated,
    look_again_at,
    plan,
    replay_gate_passed,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
A, P, C, D = (
    AssignmentState.ABSENT,
    AssignmentState.PRESENT,
    AssignmentState.CREATING,
    AssignmentState.DELETING,
)
S, ACT = GrantState.SCHEDULED, GrantState.ACTIVE


def g(
    gid: str = "g1",
    state: GrantState = S,
    *,
    start: datetime = NOW - H,
    end: datetime = NOW + H,
    stop: str | None = None,
    ready: bool = True,
) -> GrantFacts:
    return GrantFacts(gid, state, start, end, stop, ready)  # type: ignore[arg-type]


def triple(a: AssignmentState, *grants: GrantFacts, standing: bool = False) -> TripleFacts:
    return TripleFacts(a, grants, standing)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # intents are resumed first, whatever the grants say now
        (triple(C, g(stop="revoked")), Plan(Step.RESUME_CREATE)),
        (triple(D, g()), Plan(Step.RESUME_DELETE)),
        # activation: a grant in its window wants the assignment
        (triple(A, g()), Plan(Step.CREATE)),
        (triple(P, g()), Plan(Step.SETTLE, activate=("g1",))),
        (triple(P, g("g1", ACT), g("g2")), Plan(Step.SETTLE, activate=("g2",))),  # joins
        # not yet in its window: nothing to do until its start
        (triple(A, g(start=NOW + H, end=NOW + 2 * H)), Plan(Step.WAIT, look_again_at=NOW + H)),
        # the replay gate: not served before the stops published before it were read
        (triple(A, g(ready=False)), Plan(Step.WAIT, look_again_at=NOW + H)),
        (triple(P, g("g1", ACT, ready=False)), Plan(Step.WAIT, look_again_at=NOW + H)),
        # a create finished after its only grant was revoked: delete, then end it
        (triple(P, g(stop="revoked")), Plan(Step.DELETE)),
        (
            triple(A, g(stop="revoked")),
            Plan(Step.SETTLE, end=(Ending("g1", "revoked", removed=False),)),
        ),
        # served, then revoked and removed
        (triple(P, g("g1", ACT, stop="revoked")), Plan(Step.DELETE)),
        (
            triple(A, g("g1", ACT, stop="revoked")),
            Plan(Step.SETTLE, end=(Ending("g1", "revoked", removed=True),)),
        ),
        # expiry
        (triple(P, g("g1", ACT, end=NOW)), Plan(Step.DELETE)),
        (
            triple(A, g("g1", ACT, end=NOW)),
            Plan(Step.SETTLE, end=(Ending("g1", "expired", removed=True),)),
        ),
        # lapsed: its window passed before it was served
        (
            triple(A, g(start=NOW - 2 * H, end=NOW - H)),
            Plan(Step.SETTLE, end=(Ending("g1", "expired", removed=False),)),
        ),
        # cancelled before activation: never created
        (
            triple(A, g(start=NOW + H, end=NOW + 2 * H, stop="cancelled")),
            Plan(Step.SETTLE, end=(Ending("g1", "cancelled", removed=False),)),
        ),
        # overlaps: another holder keeps the assignment; the ending grant keeps nothing
        (
            triple(P, g("g1", ACT, stop="revoked"), g("g2", ACT)),
            Plan(Step.SETTLE, end=(Ending("g1", "revoked", removed=False),)),
        ),
        # standing: never deleted, its grants end with the assignment kept
        (
            triple(P, g("g1", ACT, end=NOW), standing=True),
            Plan(Step.SETTLE, end=(Ending("g1", "expired", removed=False),)),
        ),
        (triple(P, standing=True), Plan(Step.WAIT)),
        # nothing holds an assignment of ours: delete it; nothing at all: wait
        (triple(P), Plan(Step.DELETE)),
        (triple(A), Plan(Step.WAIT)),
        # drift: not Elevate's and nothing backs it — reported once in dry run, or removed
        (TripleFacts(P, found=True), Plan(Step.WAIT, report_drift=True)),
        (TripleFacts(P, found=True, drift_reported=True), Plan(Step.WAIT)),
        (TripleFacts(P, found=True, removal=True), Plan(Step.DELETE)),
        (TripleFacts(P, found=True, standing=True), Plan(Step.WAIT)),  # standing keeps it
        (TripleFacts(P, (g(),), found=True), Plan(Step.SETTLE, activate=("g1",))),
        # a grant's access that outlived its window and was removed as drift
        (
            TripleFacts(A, (g("g1", ACT, end=NOW),), found=True),
            Plan(Step.SETTLE, end=(Ending("g1", "drift", removed=True),)),
        ),
    ],
)
def test_plan(facts: TripleFacts, expected: Plan) -> None:
    assert plan(facts, NOW) == expected


def test_gated_grants_are_the_ones_waiting_on_the_replay_gate() -> None:
    facts = triple(A, g("g1", ready=False), g("g2", stop="revoked", ready=False), g("g3"))
    assert gated(facts, NOW) == ("g1",)


def test_a_stopped_grant_is_never_served_even_inside_its_window() -> None:
    for stop in ("cancelled", "revoked"):
        assert plan(triple(A, g(stop=stop)), NOW).step is not Step.CREATE


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        ((g(start=NOW + H, end=NOW + 2 * H),), NOW + H),
        ((g("g1", ACT, end=NOW + 2 * H), g("g2", start=NOW + H, end=NOW + 3 * H)), NOW + H),
        ((g("g1", ACT, end=NOW + 2 * H),), NOW + 2 * H),
        ((g(stop="revoked"),), None),
        ((g("g1", GrantState.ENDED),), None),
    ],
)
def test_look_again_at(grants: tuple[GrantFacts, ...], expected: datetime | None) -> None:
    assert look_again_at(triple(A, *grants), NOW) == expected


@pytest.mark.parametrize(
    ("gate", "progress", "passed"),
    [
        (None, {}, True),
        ({}, {}, True),
        ({"0": 5, "1": 3}, {"0": 5, "1": 3}, True),
        ({"0": 5, "1": 3}, {"0": 7, "1": 3}, True),
        ({"0": 5, "1": 3}, {"0": 5, "1": 2}, False),
        ({"0": 5}, {}, False),
    ],
)
def test_replay_gate(gate: dict[str, int] | None, progress: dict[str, int], passed: bool) -> None:
    assert replay_gate_passed(gate, progress) is passed
