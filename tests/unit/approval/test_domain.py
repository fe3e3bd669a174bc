"""The approval state machine, table-tested with an injected clock: auto, 1-of-M,
2-of-3, break-glass, self-approval in every shape, an approver removed from the group
between submission and decision, one-rejection rules, expiry, cancellation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from elevate_approval import domain
from elevate_core.clock import ManualClock
from elevate_core.directory.models import Account, OrgUnit, User
from elevate_core.events.base import Event
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassUsed,
    DecisionRecorded,
    DecisionRefused,
    Person,
    RequestApproved,
    RequestDetails,
    RequestExpired,
    RequestRejected,
)
from elevate_core.policy import Terms, evaluate_request, parse_policy

POLICY = parse_policy(
    b"""
schema_version: 1
auditor_groups: [auditors]
admin_groups: [elevate-admins]
approval_rules:
  - {name: auto, auto_approve: true}
  - {name: one-lead, approver_groups: [sre-leads], pending_timeout: 4h}
  - {name: two-leads, approver_groups: [sre-leads], required_approvals: 2, pending_timeout: 8h}
  - name: two-lenient
    approver_groups: [sre-leads]
    required_approvals: 2
    one_rejection_rejects: false
    pending_timeout: 1h
eligibility:
  - {name: sandbox, principals: {groups: [sre]}, accounts: [{ou: Sandbox}],
     permission_sets: [ReadOnlyAccess], max_duration: 8h, approval: auto}
  - {name: prod-admin, principals: {groups: [sre]}, accounts: [{ou: Workloads/Prod}],
     permission_sets: [AdministratorAccess], max_duration: 4h, approval: one-lead}
  - {name: prod-db, principals: {groups: [sre]}, accounts: [{ou: Workloads/Prod}],
     permission_sets: [DatabaseAdmin], max_duration: 2h, approval: two-leads}
  - {name: prod-power, principals: {groups: [sre]}, accounts: [{ou: Workloads/Prod}],
     permission_sets: [PowerUserAccess], max_duration: 2h, approval: two-lenient}
  - {name: glass, break_glass: true, principals: {groups: [sre]}, accounts: ["*"],
     permission_sets: [AdministratorAccess], max_duration: 1h, review_groups: [auditors]}
""",
    source="table.yaml",
)

PROD = Account(
    id="111111111111",
    name="payments-prod",
    ou_path=(OrgUnit("ou-aaaa-11111111", "Workloads"), OrgUnit("ou-aaaa-22222222", "Prod")),
)
SANDBOX = Account(
    id="222222222222", name="sandbox", ou_path=(OrgUnit("ou-aaaa-33333333", "Sandbox"),)
)

ALICE = User(user_id="u-alice", user_name="alice", email="alice@x", groups=frozenset({"sre"}))
BOB = User(
    user_id="u-bob", user_name="bob", groups=frozenset({"sre-leads"}), person_key="email:bob@x"
)
FRANK = User(user_id="u-frank", user_name="frank", groups=frozenset({"sre-leads"}))
GRACE = User(user_id="u-grace", user_name="grace", groups=frozenset({"sre-leads"}))
CAROL = User(user_id="u-carol", user_name="carol", groups=frozenset({"auditors"}))
DAVE = User(user_id="u-dave", user_name="dave", groups=frozenset({"elevate-admins"}))
ALICE_EVERY_ROLE = replace(ALICE, groups=ALICE.groups | {"sre-leads", "auditors", "elevate-admins"})
# alice as the directory knows her at decision time, and her second account (another
# user name and id, the same primary email: the same person).
ALICE_FOUND = replace(ALICE, person_key="email:alice@x")
ALICE_SECOND = User(
    user_id="u-alice-admin",
    user_name="alice.admin",
    groups=frozenset({"sre-leads"}),
    person_key="email:alice@x",
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def person(user: User) -> Person:
    return Person(user_name=user.user_name, user_id=user.user_id)


def details(
    permission_set: str, *, account: Account = PROD, break_glass: bool = False
) -> RequestDetails:
    return RequestDetails(
        request_id=uuid.uuid4(),
        requester=Person(user_name="alice", user_id="u-alice", email="alice@x"),
        account_id=account.id,
        account_name=account.name,
        permission_set_name=permission_set,
        permission_set_arn=f"arn:aws:sso:::permissionSet/ssoins-1/ps-{permission_set}",
        start=T0,
        end=T0 + timedelta(hours=1),
        justification="INC-1 database on fire",
        ticket="OPS-1",
        matched_rule="whatever-request-api-said",
        policy_version="submitted-v",
        break_glass=break_glass,
    )


def terms_for(d: RequestDetails, account: Account = PROD) -> Terms:
    terms = evaluate_request(
        POLICY, ALICE, account, d.permission_set_name, break_glass=d.break_glass
    )
    assert terms is not None
    return terms


def types(outcome: domain.Outcome) -> list[str]:
    return [type(e).__name__ for e in outcome.events]


@dataclass
class Flow:
    """One request driven through the domain functions, as the service would."""

    d: RequestDetails
    clock: ManualClock
    state: domain.RequestState | None = None
    terms: Terms | None = None

    @classmethod
    def submitted(cls, permission_set: str, **kwargs: object) -> tuple[Flow, domain.Outcome]:
        clock = ManualClock(T0)
        d = details(permission_set, **kwargs)  # type: ignore[arg-type]
        account = kwargs.get("account", PROD)
        assert isinstance(account, Account)
        flow = cls(d, clock, terms=terms_for(d, account))
        out = domain.submit(
            d, terms=flow.terms, policy_version=POLICY.version, submitted_at=T0, now=T0
        )
        flow.state = domain.RequestState(d, out.status, T0, (), out.deadline)
        return flow, out

    def decide(
        self,
        decider: User | None,
        approve: bool = True,
        *,
        approver: Person | None = None,
        terms: Terms | bool | None = True,
        after: timedelta = timedelta(minutes=5),
        requester: User | None = ALICE_FOUND,
    ) -> domain.Outcome:
        assert self.state is not None
        now = self.clock.advance(after)
        assert decider is not None or approver is not None
        out = domain.decide(
            self.state,
            domain.Decision(
                approver=approver or person(decider),  # type: ignore[arg-type]
                decider=decider,
                approve=approve,
                comment="c",
            ),
            terms=self.terms if terms is True else (terms or None),
            policy_version=POLICY.version,
            now=now,
            requester=requester,
        )
        votes = self.state.votes + ((out.counted,) if out.counted else ())
        self.state = replace(self.state, status=out.status, votes=votes, deadline=out.deadline)
        return out


def test_auto_approves_at_once_with_the_full_snapshot() -> None:
    _flow, out = Flow.submitted("ReadOnlyAccess", account=SANDBOX)
    assert out.status == "approved"
    assert types(out) == ["RequestApproved"]
    approved = out.events[0]
    assert isinstance(approved, RequestApproved)
    assert approved.auto_approved is True
    snap = approved.snapshot
    assert snap.requester.user_id == "u-alice"
    assert snap.permission_set_arn.endswith("ps-ReadOnlyAccess")
    assert (snap.start, snap.end, snap.ticket) == (T0, T0 + timedelta(hours=1), "OPS-1")
    assert snap.approval_rule == "auto"
    assert snap.policy_version == "submitted-v"
    assert snap.approval_policy_version == POLICY.version
    assert out.deadline is None
    assert out.review is None


def test_one_of_m() -> None:
    flow, out = Flow.submitted("AdministratorAccess")
    assert out.status == "pending"
    requested = out.events[0]
    assert isinstance(requested, ApprovalRequested)
    assert requested.approver_groups == ("sre-leads",)
    assert requested.required_approvals == 1
    assert requested.expires_at == T0 + timedelta(hours=4)
    assert out.deadline == T0 + timedelta(hours=4)

    decided = flow.decide(GRACE)
    assert decided.status == "approved"
    assert types(decided) == ["DecisionRecorded", "RequestApproved"]
    recorded, approved = decided.events
    assert isinstance(recorded, DecisionRecorded)
    assert (recorded.approvals_so_far, recorded.required_approvals) == (1, 1)
    assert isinstance(approved, RequestApproved)
    assert approved.auto_approved is False
    assert approved.snapshot.approvers == ("grace",)
    assert approved.snapshot.approval_rule == "one-lead"
    assert decided.deadline is None  # the expiry timer goes


def test_two_of_three_counts_distinct_people() -> None:
    flow, _ = Flow.submitted("DatabaseAdmin")
    first = flow.decide(BOB)
    assert first.status == "pending"
    assert types(first) == ["DecisionRecorded"]
    assert isinstance(first.events[0], DecisionRecorded)
    assert first.events[0].approvals_so_far == 1

    # Bob again, by the same id (whatever the name), or from his second account (another
    # name and id, the same person key): one person counts once.
    second = replace(BOB, user_id="u-bob-2", user_name="bob.ops")
    for again in (BOB, replace(BOB, user_name="BOB"), second):
        repeat = flow.decide(again)
        assert repeat.status == "pending"
        assert types(repeat) == ["DecisionRefused"]
        assert isinstance(repeat.events[0], DecisionRefused)
        assert repeat.events[0].reason == "already_decided"
        assert repeat.counted is None

    other = flow.decide(FRANK)
    assert other.status == "approved"
    assert types(other) == ["DecisionRecorded", "RequestApproved"]
    assert isinstance(other.events[1], RequestApproved)
    assert other.events[1].snapshot.approvers == ("bob", "frank")

    late = flow.decide(GRACE)
    assert types(late) == ["DecisionRefused"]
    assert isinstance(late.events[0], DecisionRefused)
    assert late.events[0].reason == "request_final"
    assert late.status == "approved"


def test_break_glass_approves_at_once_flags_review_and_raises_the_alarm() -> None:
    _flow, out = Flow.submitted("AdministratorAccess", break_glass=True)
    assert out.status == "approved"
    assert out.review == "pending"
    assert types(out) == ["RequestApproved", "BreakGlassUsed"]
    approved, alarm = out.events
    assert isinstance(approved, RequestApproved)
    assert approved.auto_approved is True
    assert approved.snapshot.break_glass is True
    assert approved.snapshot.approval_rule == "break-glass"
    assert isinstance(alarm, BreakGlassUsed)
    assert alarm.severity == "high"
    assert alarm.review == "pending"
    assert alarm.review_groups == ("auditors",)
    assert alarm.matched_rule == "glass"
    assert alarm.justification == "INC-1 database on fire"
    assert [e.outcome for e in out.log] == ["approved"]
    assert "break-glass" in (out.log[0].detail or "")


SELF = [
    pytest.param(ALICE_EVERY_ROLE, None, id="requester-in-approver-admin-auditor-groups"),
    pytest.param(replace(ALICE_EVERY_ROLE, user_name="ALICE"), None, id="name-in-other-case"),
    pytest.param(
        replace(ALICE_EVERY_ROLE, user_name="alice-2"), None, id="same-user-id-other-name"
    ),
    pytest.param(ALICE_SECOND, None, id="second-account-same-person-key"),
    pytest.param(
        BOB,
        Person(user_name="bob", user_id="u-alice"),
        id="event-carries-requester-id-under-an-approver-name",
    ),
]


@pytest.mark.parametrize(("decider", "approver"), SELF)
@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
def test_nobody_decides_their_own_request(
    decider: User, approver: Person | None, approve: bool
) -> None:
    flow, _ = Flow.submitted("AdministratorAccess")
    out = flow.decide(decider, approve, approver=approver)
    assert out.status == "pending"
    assert types(out) == ["DecisionRefused"]
    assert isinstance(out.events[0], DecisionRefused)
    assert out.events[0].reason == "requester"
    assert out.counted is None
    assert out.deadline == T0 + timedelta(hours=4)  # still pending, timer kept
    assert [(e.outcome, e.reason) for e in out.log] == [("refused", "requester")]


@pytest.mark.parametrize(
    ("requester", "decider"),
    [
        pytest.param(ALICE, ALICE_SECOND, id="requester-key-unknown-ids-only"),
        pytest.param(
            replace(ALICE_FOUND, user_id="u-new-alice"),
            ALICE_SECOND,
            id="requester-name-now-someone-else",
        ),
        pytest.param(
            ALICE_FOUND,
            replace(ALICE_EVERY_ROLE, user_id="u-ALICE", user_name="ALICE", email=None),
            id="name-differing-only-by-case-is-someone-else",
        ),
    ],
)
def test_other_people_count(requester: User, decider: User) -> None:
    # Without the same id or the same known person key, a decider is someone else.
    flow, _ = Flow.submitted("AdministratorAccess")
    out = flow.decide(decider, requester=requester)
    assert types(out) == ["DecisionRecorded", "RequestApproved"]


@pytest.mark.parametrize(
    "decider",
    [
        pytest.param(CAROL, id="auditor"),
        pytest.param(DAVE, id="admin"),
        pytest.param(replace(BOB, groups=frozenset()), id="approver-removed-from-the-group"),
    ],
)
def test_non_approvers_are_refused(decider: User) -> None:
    flow, _ = Flow.submitted("AdministratorAccess")
    out = flow.decide(decider)
    assert types(out) == ["DecisionRefused"]
    assert isinstance(out.events[0], DecisionRefused)
    assert out.events[0].reason == "not_an_approver"
    assert out.status == "pending"


def test_approver_removed_between_submit_and_decision() -> None:
    # Bob was a lead when alice submitted; the directory says otherwise at decision time.
    flow, _ = Flow.submitted("DatabaseAdmin")
    assert flow.decide(FRANK).status == "pending"
    out = flow.decide(replace(BOB, groups=frozenset({"engineers"})))
    assert isinstance(out.events[0], DecisionRefused)
    assert out.events[0].reason == "not_an_approver"
    assert "sre-leads" in (out.events[0].detail or "")
    assert flow.decide(GRACE).status == "approved"


def test_unknown_decider_and_identity_mismatch_are_refused() -> None:
    flow, _ = Flow.submitted("AdministratorAccess")
    unknown = flow.decide(None, approver=person(BOB))
    assert isinstance(unknown.events[0], DecisionRefused)
    assert unknown.events[0].reason == "not_an_approver"
    for claimed in (
        Person(user_name="bob", user_id="u-impostor"),
        Person(user_name="Alice", user_id="u-bob"),  # names compare exactly
    ):
        mismatch = flow.decide(BOB, approver=claimed)
        assert isinstance(mismatch.events[0], DecisionRefused)
        assert mismatch.events[0].reason == "not_an_approver"
    assert flow.state is not None
    assert flow.state.status == "pending"


def test_one_rejection_rejects() -> None:
    flow, _ = Flow.submitted("DatabaseAdmin")
    assert flow.decide(BOB).status == "pending"
    out = flow.decide(FRANK, approve=False)
    assert out.status == "rejected"
    assert types(out) == ["DecisionRecorded", "RequestRejected"]
    rejected = out.events[1]
    assert isinstance(rejected, RequestRejected)
    assert rejected.rejected_by.user_name == "frank"
    assert rejected.comment == "c"
    assert out.deadline is None
    assert types(flow.decide(GRACE)) == ["DecisionRefused"]


def test_rejections_recorded_but_pending_when_the_rule_says_so() -> None:
    flow, _ = Flow.submitted("PowerUserAccess")
    out = flow.decide(BOB, approve=False)
    assert out.status == "pending"
    assert types(out) == ["DecisionRecorded"]
    assert isinstance(out.events[0], DecisionRecorded)
    assert out.events[0].decision == "reject"
    assert out.events[0].approvals_so_far == 0
    # Bob may not change his mind: his first decision is the one that counts.
    assert types(flow.decide(BOB)) == ["DecisionRefused"]
    assert flow.decide(FRANK).status == "pending"
    done = flow.decide(GRACE)
    assert done.status == "approved"
    assert isinstance(done.events[1], RequestApproved)
    assert done.events[1].snapshot.approvers == ("frank", "grace")


def test_expiry_by_timer_and_decisions_after_the_deadline() -> None:
    flow, out = Flow.submitted("AdministratorAccess")
    assert flow.state is not None
    early = domain.expire(
        flow.state, terms_deadline=out.deadline, now=T0 + timedelta(hours=3, minutes=59)
    )
    assert early.status == "pending"
    assert early.events == ()
    assert early.deadline == T0 + timedelta(hours=4)  # re-armed, not expired

    at = T0 + timedelta(hours=4)
    expired = domain.expire(flow.state, terms_deadline=out.deadline, now=at)
    assert expired.status == "expired"
    [event] = expired.events
    assert isinstance(event, RequestExpired)
    assert (event.pending_since, event.expired_at) == (T0, at)
    assert expired.deadline is None

    # A decision that arrives after the deadline, before the timer fired: expires it.
    late = flow.decide(GRACE, after=timedelta(hours=4))
    assert late.status == "expired"
    assert types(late) == ["DecisionRefused", "RequestExpired"]
    assert isinstance(late.events[0], DecisionRefused)
    assert late.events[0].reason == "request_final"

    # Once final, the timer changes nothing.
    assert flow.state is not None
    again = domain.expire(flow.state, terms_deadline=None, now=at + timedelta(hours=1))
    assert again.status == "expired"
    assert again.events == ()


def test_a_longer_timeout_in_the_current_policy_re_arms_the_timer() -> None:
    flow, out = Flow.submitted("AdministratorAccess")
    assert flow.state is not None
    assert out.deadline is not None
    later = out.deadline + timedelta(hours=4)
    re_armed = domain.expire(flow.state, terms_deadline=later, now=out.deadline)
    assert (re_armed.status, re_armed.deadline, re_armed.events) == ("pending", later, ())


def test_cancel_before_the_deciding_approval_means_no_approval() -> None:
    flow, _ = Flow.submitted("DatabaseAdmin")
    flow.decide(BOB)
    assert flow.state is not None
    cancelled = domain.cancel(flow.state, by=person(ALICE), reason="not needed")
    assert cancelled.status == "cancelled"
    assert cancelled.events == ()
    assert cancelled.deadline is None
    assert not cancelled.cancelled_after_approval
    flow.state = replace(flow.state, status="cancelled")
    out = flow.decide(FRANK)
    assert types(out) == ["DecisionRefused"]
    assert isinstance(out.events[0], DecisionRefused)
    assert out.events[0].reason == "request_final"
    assert out.status == "cancelled"


def test_cancel_after_approval_is_approved_then_cancelled() -> None:
    flow, _ = Flow.submitted("AdministratorAccess")
    assert flow.decide(BOB).status == "approved"
    assert flow.state is not None
    out = domain.cancel(flow.state, by=person(ALICE), reason=None)
    assert out.status == "cancelled"
    assert out.cancelled_after_approval
    assert out.events == ()  # grant-worker reads the cancel itself and revokes
    again = domain.cancel(replace(flow.state, status="expired"), by=person(ALICE), reason=None)
    assert (again.status, [e.outcome for e in again.log]) == ("expired", ["ignored"])


def test_not_eligible_under_the_current_policy() -> None:
    d = details("AdministratorAccess")
    refused = domain.submit(d, terms=None, policy_version="v2", submitted_at=T0, now=T0)
    assert refused.status == "rejected"
    assert isinstance(refused.events[0], RequestRejected)
    assert refused.events[0].rejected_by == domain.SYSTEM
    # Eligibility lost while pending: the next decision finds it rejected.
    flow, _ = Flow.submitted("AdministratorAccess")
    out = flow.decide(BOB, terms=False)
    assert out.status == "rejected"
    assert types(out) == ["DecisionRefused", "RequestRejected"]


def test_policy_turned_auto_while_pending_approves() -> None:
    flow, _ = Flow.submitted("AdministratorAccess")
    auto = terms_for(details("ReadOnlyAccess", account=SANDBOX), SANDBOX)
    out = flow.decide(BOB, terms=auto)
    assert out.status == "approved"
    assert types(out) == ["DecisionRefused", "RequestApproved"]


def test_every_decision_gets_exactly_one_answer() -> None:
    answers = {"DecisionRecorded", "DecisionRefused"}
    flow, _ = Flow.submitted("DatabaseAdmin")
    for decider in (ALICE_EVERY_ROLE, CAROL, BOB, BOB, FRANK, GRACE):
        out = flow.decide(decider)
        events: list[Event] = list(out.events)
        assert sum(type(e).__name__ in answers for e in events) == 1
