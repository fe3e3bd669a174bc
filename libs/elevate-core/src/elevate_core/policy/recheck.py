"""The re-check of one request against the caller's own policy copy and directory, pure.

request-api checks a request when it is submitted; approval checks it again before it
decides, and grant-worker before it grants — each with its own policy copy and its own view
of the directory, so a well-formed event that says something the policy does not allow
(written by the wrong principal, or by a writer with a stale or broken policy) is refused
with a stable reason code instead of being acted on.

`judge` takes the request as its event states it (`RequestFacts`), what the directory says
about its user, account and permission set *now* (`Found`), the policy, the limits and the
managed scope, and returns the request's `Terms` when everything holds or a `Refusal`.
Looking things up is the caller's business (`elevate_core.recheck` does it for services);
time comes in as the request's submission time, never from a clock.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta

from elevate_core.directory.models import Account, PermissionSet, User
from elevate_core.events.models import RequestDetails
from elevate_core.policy.durations import format_duration
from elevate_core.policy.evaluate import evaluate_request
from elevate_core.policy.matching import account_match
from elevate_core.policy.model import Policy
from elevate_core.policy.reasons import Reason
from elevate_core.policy.terms import Terms

#: Codes that mean "this person may not have this access" (rather than "not like this").
INELIGIBLE = frozenset({Reason.NOT_ELIGIBLE, Reason.MANAGEMENT_ACCOUNT})


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request asks for, as the event carrying it says (nothing here is trusted)."""

    user_name: str
    user_id: str
    account_id: str
    permission_set_name: str
    permission_set_arn: str
    start: datetime
    end: datetime
    ticket: str | None
    break_glass: bool
    # The start horizon counts from here.
    submitted_at: datetime

    @classmethod
    def of(cls, details: RequestDetails, *, submitted_at: datetime) -> RequestFacts:
        return cls(
            user_name=details.requester.user_name,
            user_id=details.requester.user_id,
            account_id=details.account_id,
            permission_set_name=details.permission_set_name,
            permission_set_arn=details.permission_set_arn,
            start=details.start,
            end=details.end,
            ticket=details.ticket,
            break_glass=details.break_glass,
            submitted_at=submitted_at,
        )


@dataclass(frozen=True, slots=True)
class Found:
    """The request's user (by user name), account and permission set (by name) as the
    directory has them now; None: there is no such thing."""

    user: User | None
    account: Account | None
    permission_set: PermissionSet | None


@dataclass(frozen=True, slots=True)
class Limits:
    """How far after its submission a request may start; `start_tolerance`, when set, how
    far before it (request-api: "not in the past"). A re-check leaves that out: a start
    before submission only shortens the window."""

    horizon: timedelta
    start_tolerance: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    code: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the request may not be granted: every problem found, the decisive one first."""

    problems: tuple[Problem, ...]

    @property
    def code(self) -> Reason:
        return self.problems[0].code

    @property
    def reason(self) -> str:
        return "; ".join(p.message for p in self.problems)


def _days(span: timedelta) -> str:
    whole = span % timedelta(days=1) == timedelta(0)
    return f"{span.days} days" if whole else format_duration(span)


def check_start(start: datetime, *, submitted_at: datetime, limits: Limits) -> Problem | None:
    """Whether the start lies within the limits around the submission time."""
    tolerance = limits.start_tolerance
    if tolerance is not None and start < submitted_at - tolerance:
        return Problem(Reason.START_IN_PAST, "start: must not be in the past")
    if start > submitted_at + limits.horizon:
        return Problem(
            Reason.START_BEYOND_HORIZON, f"start: must be within {_days(limits.horizon)}"
        )
    return None


def _identity(request: RequestFacts, found: Found) -> Problem | None:
    """The first thing that does not exist as the request names it (nothing else can be
    judged without it)."""
    user = found.user
    if user is None:
        return Problem(Reason.USER_UNKNOWN, f"no Identity Store user named {request.user_name!r}")
    if user.user_id != request.user_id:
        return Problem(
            Reason.USER_MISMATCH,
            f"Identity Store user {user.user_name!r} has id {user.user_id}, not {request.user_id}",
        )
    if found.account is None:
        return Problem(Reason.ACCOUNT_UNKNOWN, f"unknown account {request.account_id}")
    if found.permission_set is None:
        return Problem(
            Reason.PERMISSION_SET_UNKNOWN,
            f"unknown permission set {request.permission_set_name!r}",
        )
    return None


def _not_eligible(request: RequestFacts, user: User, account: Account) -> Problem:
    kind = "break-glass access to" if request.break_glass else "access to"
    message = (
        f"{user.user_name} is not eligible for {kind} "
        f"{request.permission_set_name} on {account.name} ({account.id})"
    )
    if account.is_management:
        # The evaluator covers the management account only where a rule names it by id or
        # name (never through "*" or an OU): say so, it is the likely surprise.
        return Problem(
            Reason.MANAGEMENT_ACCOUNT,
            f"{message}: the management account is covered only by a rule naming it",
        )
    return Problem(Reason.NOT_ELIGIBLE, message)


def policy_covers(policy: Policy, account: Account, permission_set: str) -> bool:
    """Whether any eligibility rule (break-glass too) makes the pair requestable: the
    policy's managed scope, by permission set name."""
    return any(
        permission_set in rule.permission_sets and account_match(rule, account, policy).matched
        for rule in policy.eligibility_rules
    )


def _target(
    request: RequestFacts,
    user: User,
    account: Account,
    permission_set: PermissionSet,
    terms: Terms | None,
    *,
    policy: Policy,
    scope: Container[tuple[str, str]] | None,
) -> list[Problem]:
    """What is wrong with who asks for what, where."""
    problems: list[Problem] = []
    if permission_set.arn != request.permission_set_arn:
        problems.append(
            Problem(
                Reason.PERMISSION_SET_ARN_MISMATCH,
                f"permission set ARN {request.permission_set_arn} is not the ARN of "
                f"{permission_set.name} ({permission_set.arn})",
            )
        )
    if terms is None:
        problems.append(_not_eligible(request, user, account))
    name = request.permission_set_name
    in_scope = (
        (request.account_id, request.permission_set_arn) in scope
        if scope is not None
        else policy_covers(policy, account, name)
    )
    if not in_scope:
        problems.append(
            Problem(Reason.OUT_OF_SCOPE, f"{name} on {account.id} is not in the managed scope")
        )
    return problems


def _window(request: RequestFacts, terms: Terms | None, limits: Limits) -> list[Problem]:
    """What is wrong with when, for how long, and the ticket."""
    problems: list[Problem] = []
    late = check_start(request.start, submitted_at=request.submitted_at, limits=limits)
    if late is not None:
        problems.append(late)
    if terms is not None:
        violations = terms.violations(duration=request.end - request.start, ticket=request.ticket)
        problems.extend(Problem(code, message) for code, message in violations)
    return problems


def judge(
    request: RequestFacts,
    found: Found,
    *,
    policy: Policy,
    limits: Limits,
    scope: Container[tuple[str, str]] | None = None,
) -> Terms | Refusal:
    """The request's terms if everything holds, else every problem found.

    `scope` holds the (account id, permission set ARN) pairs the caller manages; None: the
    pairs `policy` makes requestable (the same set, derived from the policy itself)."""
    missing = _identity(request, found)
    if missing is not None:
        return Refusal((missing,))
    user, account, permission_set = found.user, found.account, found.permission_set
    assert user is not None
    assert account is not None
    assert permission_set is not None
    terms = evaluate_request(
        policy, user, account, request.permission_set_name, break_glass=request.break_glass
    )
    problems = [
        *_target(request, user, account, permission_set, terms, policy=policy, scope=scope),
        *_window(request, terms, limits),
    ]
    if problems:
        return Refusal(tuple(problems))
    assert terms is not None  # not eligible is a problem
    return terms
