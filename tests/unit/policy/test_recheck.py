"""The re-check, table-tested: what refuses a request, with which reason code, and what
lets it through. Time is the request's own (a fixed submission time), never a clock."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    PermissionSetNotFoundError,
    UserNotFoundError,
)
from elevate_core.directory.models import Account, PermissionSet, User
from elevate_core.policy import Terms
from elevate_core.policy.reasons import Reason
from elevate_core.policy.recheck import (
    Found,
    Limits,
    Refusal,
    RequestFacts,
    check_start,
    judge,
    policy_covers,
)
from elevate_core.recheck import REFUSED, DirectoryUnavailableError, recheck, report
from elevate_core.retry import is_transient

from tests.unit.policy.org import ACCOUNTS, USERS, eval_policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
POLICY = eval_policy()
LIMITS = Limits(horizon=timedelta(days=30))
ARNS = {
    name: PermissionSet(name, f"arn:aws:sso:::permissionSet/ssoins-1/ps-{name.lower()}")
    for name in ("AdministratorAccess", "ReadOnlyAccess", "PowerUserAccess")
}


def facts(
    user: str = "alice",
    account: str = "payments-prod",
    permission_set: str = "AdministratorAccess",
    **changes: Any,
) -> RequestFacts:
    """A request alice may make (sre-prod-admin: 4h max, ticket ^[A-Z]+-[0-9]+$), changed."""
    base = RequestFacts(
        user_name=USERS[user].user_name,
        user_id=USERS[user].user_id,
        account_id=ACCOUNTS[account].id,
        permission_set_name=permission_set,
        permission_set_arn=ARNS[permission_set].arn,
        start=T0 + H,
        end=T0 + 3 * H,
        ticket="OPS-1",
        break_glass=False,
        submitted_at=T0,
    )
    return dataclasses.replace(base, **changes)


def found_for(request: RequestFacts, **changes: Any) -> Found:
    """What the directory says about the request's names (the seeded truth), changed."""
    user = next((u for u in USERS.values() if u.user_name == request.user_name), None)
    account = next((a for a in ACCOUNTS.values() if a.id == request.account_id), None)
    return dataclasses.replace(
        Found(user, account, ARNS.get(request.permission_set_name)), **changes
    )


MGMT = "management"
ADMIN_ARN = ARNS["AdministratorAccess"].arn

# request -> the reason codes found, in order ([] : passes)
CASES = [
    pytest.param(facts(), [], id="as-the-policy-allows"),
    pytest.param(facts(end=T0 + 5 * H), [], id="exactly-the-maximum-duration"),
    pytest.param(facts(end=T0 + 5 * H + timedelta(seconds=1)), ["duration_too_long"], id="1s-over"),
    pytest.param(
        facts(end=T0 + H + timedelta(days=3650)), ["duration_too_long"], id="a-10-year-window"
    ),
    pytest.param(facts(end=T0 + H), ["duration_not_positive"], id="end-at-start"),
    pytest.param(facts(ticket=None), ["ticket_required"], id="no-ticket"),
    pytest.param(facts(ticket="  "), ["ticket_required"], id="blank-ticket"),
    pytest.param(facts(ticket="ops 1"), ["ticket_mismatch"], id="ticket-pattern"),
    pytest.param(
        facts(start=T0 + timedelta(days=30), end=T0 + timedelta(days=30) + H),
        [],
        id="start-at-the-horizon",
    ),
    pytest.param(
        facts(start=T0 + timedelta(days=31), end=T0 + timedelta(days=31) + H),
        ["start_beyond_horizon"],
        id="start-beyond-the-horizon",
    ),
    pytest.param(
        facts(start=T0 - 10 * H, end=T0 - 9 * H), [], id="a-past-start-only-shortens-access"
    ),
    pytest.param(facts("erin"), ["not_eligible"], id="not-eligible"),
    pytest.param(
        facts(account=MGMT), ["management_account", "out_of_scope"], id="management-via-ou"
    ),
    pytest.param(
        facts("carol", MGMT, "ReadOnlyAccess"), ["management_account"], id="management-via-star"
    ),
    pytest.param(facts("dave", MGMT, "ReadOnlyAccess"), [], id="management-named-explicitly"),
    pytest.param(
        facts(permission_set="ReadOnlyAccess", permission_set_arn=ADMIN_ARN, end=T0 + 2 * H),
        ["permission_set_arn_mismatch"],
        id="read-only-name-admin-arn",
    ),
    pytest.param(
        facts(
            permission_set="ReadOnlyAccess",
            permission_set_arn=ADMIN_ARN,
            end=T0 + H + timedelta(days=365),
        ),
        ["permission_set_arn_mismatch", "duration_too_long"],
        id="read-only-name-admin-arn-365-days",
    ),
    pytest.param(
        facts(account="payments-staging", break_glass=True, end=T0 + 2 * H),
        [],
        id="break-glass-by-a-break-glass-rule",
    ),
    pytest.param(
        facts(account="payments-staging", break_glass=True, end=T0 + 3 * H),
        ["duration_too_long"],
        id="break-glass-over-its-1h",
    ),
    pytest.param(
        facts(account="payments-staging"), ["not_eligible"], id="break-glass-rules-only-for-it"
    ),
]


@pytest.mark.parametrize(("request_", "codes"), CASES)
def test_judge(request_: RequestFacts, codes: list[str]) -> None:
    verdict = judge(request_, found_for(request_), policy=POLICY, limits=LIMITS)
    if not codes:
        assert isinstance(verdict, Terms), verdict
        return
    assert isinstance(verdict, Refusal)
    assert [p.code.value for p in verdict.problems] == codes
    assert verdict.code.value == codes[0]


# what the directory says instead -> the one reason code (nothing else can be judged)
IDENTITY = [
    pytest.param({"user": None}, "user_unknown", id="no-such-user"),
    pytest.param(
        {"user": User("someone-else", "alice", groups=frozenset({"sre"}))},
        "user_mismatch",
        id="same-name-other-user-id",
    ),
    pytest.param({"account": None}, "account_unknown", id="no-such-account"),
    pytest.param({"permission_set": None}, "permission_set_unknown", id="no-such-set"),
]


@pytest.mark.parametrize(("directory_says", "code"), IDENTITY)
def test_what_does_not_exist_as_named(directory_says: dict[str, Any], code: str) -> None:
    request = facts()
    verdict = judge(request, found_for(request, **directory_says), policy=POLICY, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    assert [p.code.value for p in verdict.problems] == [code]


def test_the_management_account_is_refused_unless_a_rule_names_it() -> None:
    """The evaluator's rule, seen through the re-check: '*' and an OU never reach the
    management account (management-via-star / -via-ou above); a rule naming it does."""
    management = ACCOUNTS[MGMT]
    assert management.is_management
    request = facts("alice", MGMT, "AdministratorAccess")
    verdict = judge(request, found_for(request), policy=POLICY, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    assert verdict.code is Reason.MANAGEMENT_ACCOUNT
    assert "covered only by a rule naming it" in verdict.reason
    # The very same account, were it not the management account, is covered by the OU rule.
    member = dataclasses.replace(management, is_management=False)
    passed = judge(request, found_for(request, account=member), policy=POLICY, limits=LIMITS)
    assert isinstance(passed, Terms)
    assert passed.rule == "infra-admins"


def test_scope_is_the_callers_when_given() -> None:
    request = facts()
    pair = (request.account_id, request.permission_set_arn)
    inside = judge(request, found_for(request), policy=POLICY, limits=LIMITS, scope={pair})
    assert isinstance(inside, Terms)
    outside = judge(request, found_for(request), policy=POLICY, limits=LIMITS, scope=set())
    assert isinstance(outside, Refusal)
    assert outside.code is Reason.OUT_OF_SCOPE


def test_the_derived_scope_is_what_any_rule_makes_requestable() -> None:
    assert policy_covers(POLICY, ACCOUNTS["payments-prod"], "AdministratorAccess")
    # Only the break-glass rule covers staging for AdministratorAccess: still managed.
    assert policy_covers(POLICY, ACCOUNTS["payments-staging"], "AdministratorAccess")
    assert not policy_covers(POLICY, ACCOUNTS["log-archive"], "AdministratorAccess")
    assert not policy_covers(POLICY, ACCOUNTS[MGMT], "PowerUserAccess")


def test_messages_are_request_apis() -> None:
    """request-api answers with these very messages (its problem details)."""
    verdict = judge(facts("erin"), found_for(facts("erin")), policy=POLICY, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    account = ACCOUNTS["payments-prod"]
    assert verdict.reason == (
        f"erin is not eligible for access to AdministratorAccess on payments-prod ({account.id})"
    )
    too_long = facts(end=T0 + 6 * H, ticket=None)
    verdict = judge(too_long, found_for(too_long), policy=POLICY, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    assert [p.message for p in verdict.problems] == [
        "duration exceeds the maximum of 4h",
        "a ticket is required",
    ]


@pytest.mark.parametrize(
    ("start", "tolerance", "code"),
    [
        (T0 - timedelta(minutes=5), timedelta(minutes=5), None),
        (T0 - timedelta(minutes=5, seconds=1), timedelta(minutes=5), "start_in_past"),
        (T0 - timedelta(days=1), None, None),
        (T0 + timedelta(days=30), None, None),
        (T0 + timedelta(days=30, seconds=1), timedelta(minutes=5), "start_beyond_horizon"),
    ],
)
def test_check_start(start: datetime, tolerance: timedelta | None, code: str | None) -> None:
    limits = Limits(horizon=timedelta(days=30), start_tolerance=tolerance)
    problem = check_start(start, submitted_at=T0, limits=limits)
    assert (problem.code.value if problem else None) == code
    if problem is not None and code == "start_beyond_horizon":
        assert problem.message == "start: must be within 30 days"


# ---- looking things up ----------------------------------------------------------------


class FakeDirectory:
    """The directory port over the test organisation; `failing` makes every call raise."""

    def __init__(self, failing: DirectoryError | None = None) -> None:
        self.failing = failing
        self.calls: list[str] = []

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.failing is not None:
            raise self.failing

    async def get_user(self, user_name: str, *, expected_id: str | None = None) -> User:
        self._call(f"user {user_name}")
        for user in USERS.values():
            if user.user_name == user_name:
                return user
        raise UserNotFoundError(user_name)

    async def get_account(self, account_id: str) -> Account:
        self._call(f"account {account_id}")
        for account in ACCOUNTS.values():
            if account.id == account_id:
                return account
        raise AccountNotFoundError(account_id)

    async def get_permission_set(self, name: str) -> PermissionSet:
        self._call(f"permission set {name}")
        if name in ARNS:
            return ARNS[name]
        raise PermissionSetNotFoundError(name)

    def invalidate_user(self, user_name: str) -> None:
        self.calls.append(f"invalidate {user_name}")


async def test_recheck_reads_the_user_past_the_cache_then_judges() -> None:
    directory = FakeDirectory()
    verdict = await recheck(facts(), policy=POLICY, directory=directory, limits=LIMITS)
    assert isinstance(verdict, Terms)
    assert verdict.rule == "sre-prod-admin"
    assert directory.calls[:2] == ["invalidate alice", "user alice"]


async def test_an_unknown_user_is_an_answer() -> None:
    directory = FakeDirectory()
    ghost = facts(user_name="ghost", user_id="id-ghost")
    verdict = await recheck(ghost, policy=POLICY, directory=directory, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    assert verdict.code is Reason.USER_UNKNOWN
    assert directory.calls == ["invalidate ghost", "user ghost"]  # nothing else looked up


async def test_an_unknown_account_or_permission_set_is_an_answer() -> None:
    directory = FakeDirectory()
    nowhere = facts(account_id="999999999999")
    verdict = await recheck(nowhere, policy=POLICY, directory=directory, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    assert verdict.code is Reason.ACCOUNT_UNKNOWN
    unknown = facts(permission_set_name="NoSuchSet")
    verdict = await recheck(unknown, policy=POLICY, directory=directory, limits=LIMITS)
    assert isinstance(verdict, Refusal)
    assert verdict.code is Reason.PERMISSION_SET_UNKNOWN


@pytest.mark.parametrize(
    "error",
    [
        DirectoryError("ThrottlingException", retryable=True, code="ThrottlingException"),
        DirectoryError("AccessDeniedException", retryable=False, code="AccessDeniedException"),
    ],
    ids=["throttled", "access-denied"],
)
async def test_a_directory_that_cannot_answer_is_transient_never_a_refusal(
    error: DirectoryError,
) -> None:
    with pytest.raises(DirectoryUnavailableError) as raised:
        await recheck(facts(), policy=POLICY, directory=FakeDirectory(error), limits=LIMITS)
    assert is_transient(raised.value)


def test_report_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    request = facts(end=T0 + H + timedelta(days=3650))
    refusal = judge(request, found_for(request), policy=POLICY, limits=LIMITS)
    assert isinstance(refusal, Refusal)
    counter = REFUSED.labels("unit-test", "duration_too_long")
    before = counter._value.get()
    with caplog.at_level(logging.ERROR, logger="elevate.recheck"):
        report(refusal, service="unit-test", request_id="r-1")
    assert counter._value.get() == before + 1
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "r-1" in caplog.records[0].getMessage()
    assert "duration_too_long" in caplog.records[0].getMessage()
