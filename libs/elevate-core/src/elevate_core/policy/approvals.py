"""Who may decide a request, and how decisions add up (N-of-M distinct people).

Nobody decides their own request, by any path: a decider whose Identity Store user
id equals the requester's, or whose user name equals it ignoring case, is refused
whatever groups they are in (approver, admin, auditor — all at once or not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from elevate_core.directory.models import User
from elevate_core.policy.schema import ApprovalRule


class Person(Protocol):
    """Anyone with an Identity Store user name and id: a `User`, or a request's requester."""

    @property
    def user_name(self) -> str: ...

    @property
    def user_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Requester:
    """The requester as a request snapshot carries them."""

    user_name: str
    user_id: str


def is_same_person(a: Person, b: Person) -> bool:
    """Same user id, or same user name ignoring case. Either is enough (fails closed)."""
    return a.user_id == b.user_id or a.user_name.casefold() == b.user_name.casefold()


@dataclass(frozen=True, slots=True)
class DecisionCheck:
    """Whether a person may decide a request; truthy when allowed, with the reason."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def may_decide(rule: ApprovalRule, *, requester: Person, decider: User) -> DecisionCheck:
    """May `decider` approve or reject a request by `requester` governed by `rule`?"""
    if is_same_person(requester, decider):
        return DecisionCheck(False, "nobody may decide their own request")
    if rule.auto_approve:
        return DecisionCheck(False, f"approval rule {rule.name!r} approves automatically")
    for group in rule.approver_groups:
        if group in decider.groups:
            return DecisionCheck(True, f"member of approver group {group!r}")
    groups = ", ".join(rule.approver_groups)
    return DecisionCheck(False, f"not in any approver group of {rule.name!r} ({groups})")


def pending_deadline(rule: ApprovalRule, submitted_at: datetime) -> datetime:
    """When a request still pending under `rule` expires."""
    return submitted_at + rule.pending_timeout


@dataclass(frozen=True, slots=True)
class Vote:
    decider: User
    approve: bool
    at: datetime


TallyStatus = Literal["pending", "approved", "rejected", "expired"]


@dataclass(frozen=True, slots=True)
class Tally:
    status: TallyStatus
    required: int
    approvers: tuple[str, ...]
    rejecters: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    deadline: datetime


def _person_keys(person: User) -> set[str]:
    # a person is matched by id and by name, so neither alone lets them vote twice
    return {f"id:{person.user_id}", f"name:{person.user_name.casefold()}"}


def _refusal(
    rule: ApprovalRule,
    requester: Person,
    vote: Vote,
    *,
    status: TallyStatus,
    deadline: datetime,
    seen: set[str],
) -> str | None:
    """Why `vote` does not count, or None when it does."""
    if status != "pending":
        return f"request already {status}"
    if vote.at >= deadline:
        return "the pending timeout has passed"
    check = may_decide(rule, requester=requester, decider=vote.decider)
    if not check:
        return check.reason
    if _person_keys(vote.decider) & seen:
        return "already decided this request"
    return None


def tally(
    rule: ApprovalRule,
    requester: Person,
    votes: Sequence[Vote],
    *,
    submitted_at: datetime,
    now: datetime,
) -> Tally:
    """Count decisions in time order. Only votes `may_decide` allows count, and each
    person once (their first vote; by user id and by case-folded user name). The
    request is approved at `required_approvals` distinct approvals; rejected at the
    first rejection if `one_rejection_rejects` (otherwise rejections are recorded and
    it stays pending); expired once `now` reaches the deadline while still pending.
    The first terminal outcome wins; later votes are refused."""
    deadline = pending_deadline(rule, submitted_at)
    if rule.auto_approve:
        return Tally("approved", 0, (), (), (), deadline)
    status: TallyStatus = "pending"
    approvers: list[str] = []
    rejecters: list[str] = []
    refused: list[tuple[str, str]] = []
    seen: set[str] = set()
    for vote in sorted(votes, key=lambda v: v.at):
        name = vote.decider.user_name
        reason = _refusal(rule, requester, vote, status=status, deadline=deadline, seen=seen)
        if reason is not None:
            refused.append((name, reason))
            continue
        seen |= _person_keys(vote.decider)
        if vote.approve:
            approvers.append(name)
            if len(approvers) >= rule.required_approvals:
                status = "approved"
        else:
            rejecters.append(name)
            if rule.one_rejection_rejects:
                status = "rejected"
    if status == "pending" and now >= deadline:
        status = "expired"
    return Tally(
        status,
        rule.required_approvals,
        tuple(approvers),
        tuple(rejecters),
        tuple(refused),
        deadline,
    )
