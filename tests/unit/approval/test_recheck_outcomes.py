"""A request that fails approval's re-check is rejected by the system with the reason
code: at submission (before any approver is asked) and at a later decision."""

from __future__ import annotations

from elevate_approval import domain
from elevate_core.events.models import DecisionRefused, RequestRejected
from elevate_core.policy.reasons import Reason
from elevate_core.policy.recheck import Problem, Refusal

from tests.unit.approval.test_domain import BOB, POLICY, T0, Flow, details, person

TOO_LONG = Refusal(
    (
        Problem(Reason.PERMISSION_SET_ARN_MISMATCH, "permission set ARN x is not the ARN of y"),
        Problem(Reason.DURATION_TOO_LONG, "duration exceeds the maximum of 4h"),
    )
)


def test_a_refused_submission_is_rejected_with_its_reason_code() -> None:
    d = details("AdministratorAccess")
    out = domain.submit(
        d, terms=None, refusal=TOO_LONG, policy_version="v2", submitted_at=T0, now=T0
    )
    assert out.status == "rejected"
    [rejected] = out.events
    assert isinstance(rejected, RequestRejected)
    assert rejected.rejected_by == domain.SYSTEM
    assert rejected.reason_code == "permission_set_arn_mismatch"
    assert rejected.comment is not None
    assert "duration exceeds the maximum of 4h" in rejected.comment
    [entry] = out.log
    assert (entry.outcome, entry.reason) == ("rejected", "permission_set_arn_mismatch")
    assert entry.detail == TOO_LONG.reason


def test_not_eligible_keeps_its_wording_and_gains_its_code() -> None:
    out = domain.submit(
        details("AdministratorAccess"), terms=None, policy_version="v2", submitted_at=T0, now=T0
    )
    [rejected] = out.events
    assert isinstance(rejected, RequestRejected)
    assert rejected.reason_code == "not_eligible"
    assert rejected.comment == "the requester is not eligible for this access under policy v2"


def test_a_decision_on_a_request_that_now_fails_the_recheck_rejects_it() -> None:
    flow, _ = Flow.submitted("AdministratorAccess")
    assert flow.state is not None
    out = domain.decide(
        flow.state,
        domain.Decision(approver=person(BOB), decider=BOB, approve=True),
        terms=None,
        refusal=TOO_LONG,
        policy_version=POLICY.version,
        now=T0,
    )
    assert out.status == "rejected"
    refused, rejected = out.events
    assert isinstance(refused, DecisionRefused)
    assert refused.reason == "request_final"
    assert refused.detail == f"the request fails the re-check: {TOO_LONG.reason}"
    assert isinstance(rejected, RequestRejected)
    assert rejected.reason_code == "permission_set_arn_mismatch"
