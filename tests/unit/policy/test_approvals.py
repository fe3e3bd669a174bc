"""Who may decide, and how decisions add up: self-approval in every shape (one person
with two accounts included), N-of-M distinct people."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from elevate_core.clock import ManualClock
from elevate_core.directory.models import User
from elevate_core.policy import (
    BREAK_GLASS_APPROVAL,
    ApprovalRule,
    Requester,
    Vote,
    is_same_person,
    may_decide,
    pending_deadline,
    tally,
)

from tests.unit.policy.org import USERS

ONE = ApprovalRule(name="one-lead", approver_groups=("sre-leads",), required_approvals=1)
TWO = ApprovalRule(
    name="two-leads",
    approver_groups=("sre-leads", "security"),
    required_approvals=2,
    pending_timeout=timedelta(hours=2),
)
TWO_LENIENT = TWO.model_copy(update={"one_rejection_rejects": False})
AUTO = ApprovalRule(name="auto", auto_approve=True)

ALICE = USERS["alice"]
BOB = USERS["bob"]
# alice, also a lead, also an admin, also an auditor: every role at once.
ALICE_ALL_ROLES = replace(
    ALICE, groups=ALICE.groups | {"sre-leads", "elevate-admins", "auditors", "security"}
)
# The person key the directory fills in (ELEVATE_PERSON_KEY=email) for alice's accounts.
ALICE_KEY = "email:alice@example.com"
ALICE_KEYED = replace(ALICE, person_key=ALICE_KEY)
# alice's second account: another user name and user id, the same primary email.
ALICE_SECOND = User(
    "id-alice-admin", "alice.admin", groups=frozenset({"sre-leads"}), person_key=ALICE_KEY
)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param(ALICE, ALICE, True, id="same-account"),
        pytest.param(ALICE, replace(ALICE, user_name="alice-renamed"), True, id="same-id"),
        pytest.param(ALICE_KEYED, ALICE_SECOND, True, id="second-account-same-key"),
        pytest.param(ALICE, ALICE_SECOND, False, id="key-unknown-ids-only"),
        pytest.param(
            ALICE_SECOND,
            replace(ALICE_SECOND, person_key=None, user_id="x"),
            False,
            id="other-id-one-key-missing",
        ),
        pytest.param(
            ALICE,
            replace(ALICE, user_id="id-ALICE", user_name="ALICE"),
            False,
            id="name-differing-only-by-case",
        ),
        pytest.param(
            Requester("sam", "id-sam"),
            Requester("\u017fam", "id-long-s"),
            False,
            id="long-s-is-not-s",
        ),
        pytest.param(
            replace(BOB, person_key="email:bob@example.com"),
            replace(ALICE_SECOND, person_key="employee_number:bob@example.com"),
            False,
            id="keys-of-different-kinds",
        ),
    ],
)
def test_is_same_person(a: User | Requester, b: User | Requester, same: bool) -> None:
    assert is_same_person(a, b) is same
    assert is_same_person(b, a) is same


@pytest.mark.parametrize(
    ("requester", "decider", "rule", "allowed", "reason"),
    [
        pytest.param(
            ALICE, BOB, ONE, True, "member of approver group 'sre-leads'", id="lead-approves-other"
        ),
        pytest.param(
            ALICE_ALL_ROLES,
            ALICE_ALL_ROLES,
            ONE,
            False,
            "own request",
            id="requester-in-approver-group",
        ),
        pytest.param(
            ALICE, ALICE_ALL_ROLES, TWO, False, "own request", id="requester-holds-every-role"
        ),
        pytest.param(
            USERS["bob-sre"], BOB, ONE, False, "own request", id="requester-and-approver-two-roles"
        ),
        pytest.param(
            Requester("alice", "id-alice"),
            ALICE_ALL_ROLES,
            ONE,
            False,
            "own request",
            id="requester-as-snapshot",
        ),
        pytest.param(
            Requester("ALICE", "other-id"),
            ALICE_ALL_ROLES,
            ONE,
            True,
            "member of approver group 'sre-leads'",
            id="name-differing-only-by-case-is-someone-else",
        ),
        pytest.param(
            Requester("alice", "id-alice", ALICE_KEY),
            ALICE_SECOND,
            ONE,
            False,
            "own request",
            id="second-account-of-the-requester",
        ),
        pytest.param(
            Requester("alice", "id-alice"),
            ALICE_SECOND,
            ONE,
            True,
            "member of approver group 'sre-leads'",
            id="requester-key-unknown-compares-ids-only",
        ),
        pytest.param(
            Requester("alice-renamed", "id-alice"),
            ALICE_ALL_ROLES,
            ONE,
            False,
            "own request",
            id="same-id-other-name",
        ),
        pytest.param(
            ALICE,
            User("id-alice", "Alice.Smith", groups=frozenset({"sre-leads"})),
            ONE,
            False,
            "own request",
            id="same-id-different-user-name",
        ),
        pytest.param(
            ALICE,
            USERS["dave"],
            ONE,
            False,
            "not in any approver group",
            id="admin-is-not-approver",
        ),
        pytest.param(
            ALICE,
            USERS["carol"],
            ONE,
            False,
            "not in any approver group",
            id="auditor-is-not-approver",
        ),
        pytest.param(
            ALICE, USERS["erin"], ONE, False, "not in any approver group", id="peer-is-not-approver"
        ),
        pytest.param(ALICE, BOB, AUTO, False, "approves automatically", id="auto-rule"),
        pytest.param(
            ALICE, BOB, BREAK_GLASS_APPROVAL, False, "approves automatically", id="break-glass-rule"
        ),
        pytest.param(
            BOB,
            ALICE_ALL_ROLES,
            TWO,
            True,
            "member of approver group 'sre-leads'",
            id="multi-role-decider-for-someone-else",
        ),
    ],
)
def test_may_decide(
    requester: Requester | User, decider: User, rule: ApprovalRule, allowed: bool, reason: str
) -> None:
    check = may_decide(rule, requester=requester, decider=decider)
    assert check.allowed is allowed
    assert bool(check) is allowed
    assert reason in check.reason


CLOCK_START = ManualClock().now()


def _vote(user: User, approve: bool, minutes: int) -> Vote:
    return Vote(user, approve, CLOCK_START + timedelta(minutes=minutes))


FRANK, GRACE = USERS["frank"], USERS["grace"]
FRANK_OTHER_ID = replace(FRANK, user_id="id-frank-2", user_name="Frank")
FRANK_KEYED = replace(FRANK, person_key="employee_number:e-17")
FRANK_SECOND = User(
    "id-frank-ops", "frank.ops", groups=frozenset({"security"}), person_key="employee_number:e-17"
)


@pytest.mark.parametrize(
    ("rule", "requester", "votes", "status", "approvers", "refused"),
    [
        pytest.param(TWO, ALICE, [_vote(BOB, True, 1)], "pending", ("bob",), (), id="one-of-two"),
        pytest.param(
            TWO,
            ALICE,
            [_vote(BOB, True, 1), _vote(BOB, True, 2)],
            "pending",
            ("bob",),
            ("bob",),
            id="same-person-twice-counts-once",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(BOB, True, 1), _vote(FRANK, True, 2)],
            "approved",
            ("bob", "frank"),
            (),
            id="two-distinct-people",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(FRANK, True, 1), _vote(FRANK_OTHER_ID, True, 2)],
            "approved",
            ("frank", "Frank"),
            (),
            id="name-differing-only-by-case-is-another-person",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(FRANK_KEYED, True, 1), _vote(FRANK_SECOND, True, 2), _vote(BOB, True, 3)],
            "approved",
            ("frank", "bob"),
            ("frank.ops",),
            id="second-account-of-an-approver-counts-once",
        ),
        pytest.param(
            TWO,
            ALICE_KEYED,
            [_vote(ALICE_SECOND, True, 1), _vote(BOB, True, 2)],
            "pending",
            ("bob",),
            ("alice.admin",),
            id="second-account-of-the-requester-never-counts",
        ),
        pytest.param(
            TWO,
            USERS["bob-sre"],
            [_vote(BOB, True, 1), _vote(FRANK, True, 2)],
            "pending",
            ("frank",),
            ("bob",),
            id="requester-vote-never-counts",
        ),
        pytest.param(
            TWO,
            USERS["bob-sre"],
            [_vote(BOB, True, 1), _vote(FRANK, True, 2), _vote(GRACE, True, 3)],
            "approved",
            ("frank", "grace"),
            ("bob",),
            id="two-of-three-without-self",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(USERS["dave"], True, 1), _vote(BOB, True, 2)],
            "pending",
            ("bob",),
            ("dave",),
            id="non-approver-refused",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(BOB, False, 1), _vote(FRANK, True, 2)],
            "rejected",
            (),
            ("frank",),
            id="one-rejection-rejects",
        ),
        pytest.param(
            TWO_LENIENT,
            ALICE,
            [_vote(BOB, False, 1), _vote(FRANK, True, 2), _vote(GRACE, True, 3)],
            "approved",
            ("frank", "grace"),
            (),
            id="rejection-recorded-only",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(BOB, True, 1), _vote(FRANK, True, 2), _vote(GRACE, False, 3)],
            "approved",
            ("bob", "frank"),
            ("grace",),
            id="first-outcome-wins",
        ),
        pytest.param(
            TWO,
            ALICE,
            [_vote(BOB, True, 1), _vote(FRANK, True, 120)],
            "pending",
            ("bob",),
            ("frank",),
            id="vote-after-deadline-refused",
        ),
        pytest.param(AUTO, ALICE, [], "approved", (), (), id="auto-approve"),
    ],
)
def test_tally(
    rule: ApprovalRule,
    requester: User | Requester,
    votes: list[Vote],
    status: str,
    approvers: tuple[str, ...],
    refused: tuple[str, ...],
) -> None:
    result = tally(
        rule, requester, votes, submitted_at=CLOCK_START, now=CLOCK_START + timedelta(minutes=5)
    )
    assert result.status == status
    assert result.approvers == approvers
    assert tuple(name for name, _ in result.refused) == refused


def test_pending_timeout_with_injected_clock() -> None:
    clock = ManualClock()
    submitted = clock.now()
    assert pending_deadline(TWO, submitted) == submitted + timedelta(hours=2)
    votes = [Vote(BOB, True, clock.now())]
    clock.advance(timedelta(hours=1, minutes=59))
    assert tally(TWO, ALICE, votes, submitted_at=submitted, now=clock.now()).status == "pending"
    clock.advance(timedelta(minutes=1))
    expired = tally(TWO, ALICE, votes, submitted_at=submitted, now=clock.now())
    assert expired.status == "expired"
    assert expired.approvers == ("bob",)


def test_refused_votes_say_why_first_reason_wins() -> None:
    # each refused vote carries the first reason that applies: a settled request, then the
    # deadline, then who the decider is, then whether they already decided
    votes = [
        _vote(BOB, True, 1),
        _vote(BOB, True, 2),
        _vote(ALICE, True, 3),
        _vote(USERS["dave"], True, 4),
        _vote(FRANK, True, 5),
        _vote(BOB, False, 6),
    ]
    settled = tally(TWO, ALICE, votes, submitted_at=CLOCK_START, now=CLOCK_START)
    assert settled.status == "approved"
    assert settled.refused == (
        ("bob", "already decided this request"),
        ("alice", "nobody may decide their own request"),
        ("dave", "not in any approver group of 'two-leads' (sre-leads, security)"),
        ("bob", "request already approved"),
    )
    late = [_vote(USERS["dave"], True, 120), _vote(BOB, True, 121)]
    expired = tally(TWO, ALICE, late, submitted_at=CLOCK_START, now=CLOCK_START)
    assert expired.refused == (
        ("dave", "the pending timeout has passed"),
        ("bob", "the pending timeout has passed"),
    )


def test_second_accounts_are_refused_for_who_they_are() -> None:
    # alice's second account is alice (her own request); frank's is frank (already voted)
    votes = [
        _vote(ALICE_SECOND, True, 1),
        _vote(FRANK_KEYED, True, 2),
        _vote(FRANK_SECOND, True, 3),
    ]
    result = tally(TWO, ALICE_KEYED, votes, submitted_at=CLOCK_START, now=CLOCK_START)
    assert result.status == "pending"
    assert result.approvers == ("frank",)
    assert result.refused == (
        ("alice.admin", "nobody may decide their own request"),
        ("frank.ops", "already decided this request"),
    )
