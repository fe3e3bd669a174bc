"""A grant that has not passed its re-check is never served: not by a create, and not by
activation on an assignment another grant already holds."""

from __future__ import annotations

import dataclasses

import pytest
from elevate_grant_worker.domain import GrantFacts, Plan, Step, TripleFacts, gated, plan

from tests.unit.grant_worker.test_domain import ACT, NOW, A, P, g, triple


def unchecked(gid: str = "g1") -> GrantFacts:
    return dataclasses.replace(g(gid), checked=False)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        pytest.param(triple(A, g()), Plan(Step.CREATE), id="checked-is-created"),
        pytest.param(
            triple(A, unchecked()),
            Plan(Step.WAIT, look_again_at=g().end),
            id="unchecked-is-not-created",
        ),
        pytest.param(
            triple(P, g("a", ACT), unchecked("b")),
            Plan(Step.WAIT, look_again_at=g().end),
            id="unchecked-is-not-activated-beside-an-active-grant",
        ),
        pytest.param(
            triple(P, g("a"), g("b")),
            Plan(Step.SETTLE, activate=("a", "b")),
            id="checked-are-activated",
        ),
        pytest.param(
            triple(P, unchecked("b")),
            Plan(Step.DELETE),
            id="nothing-checked-holds-it",
        ),
        pytest.param(
            triple(P, dataclasses.replace(g("a", ACT), checked=False)),
            Plan(Step.WAIT, look_again_at=g().end),
            id="already-served-stays-served",
        ),
    ],
)
def test_plan(facts: TripleFacts, expected: Plan) -> None:
    assert plan(facts, NOW) == expected


def test_an_unchecked_grant_keeps_asking_for_a_look() -> None:
    assert gated(triple(A, unchecked()), NOW) == ("g1",)
