"""Who may decide a request, and how decisions add up (N-of-M distinct people).

One "same person" rule (`is_same_person`) decides both: two accounts are one person when
they have the same Identity Store user id, or the same person key (ELEVATE_PERSON_KEY:
primary email by default, or employee number). Nobody decides their own request from any
of their accounts, whatever groups they are in, and a person counts once however many
accounts they vote from. User names never decide: they are mutable, and two names that
differ only by case are two users. A person without a known key is compared by user id
only — the directory did not say who else they are, so nothing more can be refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from elevate_core.directory.models import User
from elevate_core.policy.schema import ApprovalRule


class Person(Protocol):
    """Anyone with an Identity Store user id and (maybe) a person key: a `User`, or a
    request's requester."""

    @property
    def user_name(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def person_key(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Requester:
    """The requester as a request snapshot carries them; `person_key` comes from the
    service's own directory lookup of them (None: compare by user id only)."""

    user_name: str
    user_id: str
    person_key: str | None = None


def _person_keys(person: Person) -> set[str]:
    keys = {f"id:{person.user_id}"}
    if person.person_key:
        keys.add(f"person:{person.person_key}")
    return keys


def is_same_person(a: Person, b: Person) -> bool:
    """Same user id, or same person key (when both have one)."""
    return bool(_person_keys(a) & _person_keys(b))


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
    person once (their first vote from any of their accounts: `is_same_person`). The
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
