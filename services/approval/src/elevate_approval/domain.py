"""The approval state machine, pure: no I/O, no clock of its own.

pending → approved | rejected | expired | cancelled (and approved → cancelled: an
approved request cancelled afterwards is "approved-then-cancelled"; grant-worker
revokes). Each function takes what is known about a request, the approval rule of the
policy in force *now* (or None when the request fails the re-check now) and the time,
and returns an `Outcome`: the new state, the events to publish and the decision-log
entries to append. Counting reuses `elevate_core.policy` (`may_decide`, `tally`,
`pending_deadline`), so "nobody decides their own request" and "N distinct people"
mean the same here as everywhere else.

Every `DecisionSubmitted` yields exactly one `DecisionRecorded` or `DecisionRefused`,
followed by the request's outcome when the decision (or the time) settles it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from elevate_core.directory.models import User
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
    RequestSnapshot,
)
from elevate_core.policy import Terms, Vote, is_same_person, may_decide, pending_deadline, tally
from elevate_core.policy.approvals import Requester
from elevate_core.policy.reasons import Reason
from elevate_core.policy.recheck import Refusal

Status = Literal["pending", "approved", "rejected", "expired", "cancelled"]
RefusalReason = Literal["requester", "not_an_approver", "already_decided", "request_final"]
FINAL: frozenset[str] = frozenset({"approved", "rejected", "expired", "cancelled"})

#: Who acts when the service itself decides (the requester lost eligibility).
SYSTEM = Person(user_name="elevate-approval", user_id="system:elevate-approval")


@dataclass(frozen=True, slots=True)
class RequestState:
    """What the domain needs to know about a stored request."""

    details: RequestDetails
    status: Status
    submitted_at: datetime
    votes: tuple[Vote, ...] = ()  # counted decisions, oldest first
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    action: str  # submit | approve | reject | cancel | expire
    outcome: str  # counted | refused | ignored | <new status>
    actor: Person
    groups: tuple[str, ...] = ()
    reason: str | None = None
    detail: str | None = None
    comment: str | None = None
    # A counted decider's person key: later decisions from their other accounts are theirs.
    actor_person_key: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    events: tuple[Event, ...] = ()
    log: tuple[LogEntry, ...] = ()
    # The expiry timer's due time while pending; None: no timer (cancel it).
    deadline: datetime | None = None
    terms: Terms | None = None  # the terms evaluated at this step, if any
    approvers: tuple[str, ...] = ()
    counted: Vote | None = None  # the decision that counted, to keep for later tallies
    review: Literal["pending"] | None = None
    cancelled_after_approval: bool = False

    @property
    def settled(self) -> bool:
        return self.status in FINAL


def person_of(user: User, email: str | None = None) -> Person:
    return Person(user_name=user.user_name, user_id=user.user_id, email=user.email or email)


def requester_of(state: RequestState, found: User | None) -> Requester:
    """The request's requester with the person key the directory has for them now; a
    user found under their name with another id is someone else (no key: ids only)."""
    snap = state.details.requester
    key = found.person_key if found is not None and found.user_id == snap.user_id else None
    return Requester(snap.user_name, snap.user_id, key)


def snapshot_of(
    details: RequestDetails, terms: Terms, approvers: Sequence[str] = ()
) -> RequestSnapshot:
    return RequestSnapshot(
        **details.model_dump(),
        approvers=tuple(approvers),
        approval_rule=terms.approval.name,
        approval_policy_version=terms.policy_version,
    )


def _code(refusal: Refusal | None) -> Reason:
    return refusal.code if refusal is not None else Reason.NOT_ELIGIBLE


def _refused(
    details: RequestDetails, policy_version: str, refusal: Refusal | None
) -> RequestRejected:
    """The system's rejection: the request fails the re-check under the policy in force
    (None: only eligibility was judged, and it is not eligible)."""
    code = _code(refusal)
    if code is Reason.NOT_ELIGIBLE:
        comment = f"the requester is not eligible for this access under policy {policy_version}"
    else:
        assert refusal is not None
        comment = f"the request fails the re-check under policy {policy_version}: {refusal.reason}"
    return RequestRejected(
        request_id=details.request_id,
        rejected_by=SYSTEM,
        comment=comment,
        reason_code=code.value,
    )


def _approve_now(
    details: RequestDetails, terms: Terms, action: str, actor: Person
) -> tuple[tuple[Event, ...], LogEntry, Literal["pending"] | None]:
    """Auto-approval, or break-glass: approved at once, no human decision."""
    events: list[Event] = [
        RequestApproved(snapshot=snapshot_of(details, terms), auto_approved=True)
    ]
    review: Literal["pending"] | None = None
    detail = f"approved automatically under {terms.approval.name!r}"
    if terms.break_glass:
        review = "pending"
        detail = "break-glass: approved at once, flagged for review"
        events.append(
            BreakGlassUsed(
                request_id=details.request_id,
                requester=details.requester,
                account_id=details.account_id,
                account_name=details.account_name,
                permission_set_name=details.permission_set_name,
                start=details.start,
                end=details.end,
                justification=details.justification,
                ticket=details.ticket,
                matched_rule=terms.rule,
                review_groups=terms.review_groups,
                policy_version=terms.policy_version,
            )
        )
    return tuple(events), LogEntry(action, "approved", actor, detail=detail), review


def submit(
    details: RequestDetails,
    *,
    terms: Terms | None,
    policy_version: str,
    submitted_at: datetime,
    now: datetime,
    refusal: Refusal | None = None,
) -> Outcome:
    """A new request, re-checked against the policy in force (`terms`: None if it fails
    the re-check, for the reason `refusal` gives; no refusal: not eligible)."""
    requester = details.requester
    if terms is None:
        detail = refusal.reason if refusal is not None else None
        return Outcome(
            "rejected",
            events=(_refused(details, policy_version, refusal),),
            log=(
                LogEntry(
                    "submit", "rejected", requester, reason=_code(refusal).value, detail=detail
                ),
            ),
        )
    rule = terms.approval
    if rule.auto_approve:
        events, entry, review = _approve_now(details, terms, "submit", requester)
        return Outcome("approved", events=events, log=(entry,), terms=terms, review=review)
    deadline = pending_deadline(rule, submitted_at)
    if now >= deadline:
        return _expired(details, submitted_at, deadline, actor=requester, action="submit")
    return Outcome(
        "pending",
        events=(
            ApprovalRequested(
                request_id=details.request_id,
                approver_groups=rule.approver_groups,
                required_approvals=rule.required_approvals,
                expires_at=deadline,
            ),
        ),
        log=(LogEntry("submit", "pending", requester),),
        deadline=deadline,
        terms=terms,
    )


def _expired(
    details: RequestDetails,
    submitted_at: datetime,
    now: datetime,
    *,
    actor: Person,
    action: str,
    before: tuple[Event, ...] = (),
    log: tuple[LogEntry, ...] = (),
) -> Outcome:
    event = RequestExpired(
        request_id=details.request_id, pending_since=submitted_at, expired_at=now
    )
    return Outcome(
        "expired",
        events=(*before, event),
        log=(*log, LogEntry(action, "expired", actor)),
    )


def _refuse(
    state: RequestState,
    approver: Person,
    action: str,
    reason: RefusalReason,
    detail: str,
    *,
    groups: tuple[str, ...] = (),
    comment: str | None = None,
) -> Outcome:
    return Outcome(
        state.status,
        events=(
            DecisionRefused(
                request_id=state.details.request_id, approver=approver, reason=reason, detail=detail
            ),
        ),
        log=(
            LogEntry(
                action, "refused", approver, groups, reason=reason, detail=detail, comment=comment
            ),
        ),
        deadline=state.deadline if state.status == "pending" else None,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """One human decision: `approver` is who the event names; `decider` is the same person
    as the directory knows them *now* (None: unknown)."""

    approver: Person
    decider: User | None
    approve: bool
    comment: str | None = None

    @property
    def action(self) -> str:
        return "approve" if self.approve else "reject"


def decide(
    state: RequestState,
    decision: Decision,
    *,
    terms: Terms | None,
    policy_version: str,
    now: datetime,
    refusal: Refusal | None = None,
    requester: User | None = None,
) -> Outcome:
    """Apply one human decision at its own time `now`; `terms` are the request's terms
    under the policy in force now (None: it fails the re-check now, for the reason
    `refusal` gives; no refusal: the requester is no longer eligible). `requester` is the
    requester as the directory knows them now (None: unknown; compared by user id only)."""
    groups = tuple(sorted(decision.decider.groups)) if decision.decider else ()

    def refuse(reason: RefusalReason, detail: str) -> Outcome:
        return _refuse(
            state,
            decision.approver,
            decision.action,
            reason,
            detail,
            groups=groups,
            comment=decision.comment,
        )

    if state.status != "pending":
        return refuse("request_final", f"the request is already {state.status}")
    # Nobody decides their own request, whatever the event or the directory say.
    who = requester_of(state, requester)
    claimed = Requester(decision.approver.user_name, decision.approver.user_id)
    if is_same_person(who, claimed) or (
        decision.decider is not None and is_same_person(who, decision.decider)
    ):
        return refuse("requester", "nobody may decide their own request")
    settled = _settled_by_terms(state, decision, (terms, refusal), policy_version, now, refuse)
    if settled is not None:
        return settled
    assert terms is not None  # _settled_by_terms settles a request without terms
    deadline = pending_deadline(terms.approval, state.submitted_at)
    reason = _not_counted(who, state, decision, terms)
    if reason is not None:
        return replace(refuse(*reason), deadline=deadline)
    assert decision.decider is not None  # _not_counted refuses an unknown decider
    return _count(who, state, decision, decision.decider, terms, groups, deadline, now)


def _settled_by_terms(
    state: RequestState,
    decision: Decision,
    verdict: tuple[Terms | None, Refusal | None],
    policy_version: str,
    now: datetime,
    refuse: Callable[[RefusalReason, str], Outcome],
) -> Outcome | None:
    """The policy in force now settles the request whatever the decision: it fails the
    re-check (the requester is no longer eligible, …), the rule now approves
    automatically, or the time is up."""
    details = state.details
    terms, refusal = verdict
    if terms is None:
        code = _code(refusal)
        why = "the requester is no longer eligible for this access"
        if code is not Reason.NOT_ELIGIBLE and refusal is not None:
            why = f"the request fails the re-check: {refusal.reason}"
        refused = refuse("request_final", why)
        entry = LogEntry(decision.action, "rejected", SYSTEM, reason=code.value, detail=why)
        return replace(
            refused,
            status="rejected",
            events=(*refused.events, _refused(details, policy_version, refusal)),
            log=(*refused.log, entry),
            deadline=None,
        )
    if terms.approval.auto_approve:
        refused = refuse("request_final", "approved automatically under the current policy")
        events, entry, review = _approve_now(details, terms, decision.action, SYSTEM)
        return replace(
            refused,
            status="approved",
            events=(*refused.events, *events),
            log=(*refused.log, entry),
            deadline=None,
            terms=terms,
            review=review,
        )
    deadline = pending_deadline(terms.approval, state.submitted_at)
    if now >= deadline:
        refused = refuse("request_final", "the pending timeout has passed")
        return _expired(
            details,
            state.submitted_at,
            deadline,
            actor=SYSTEM,
            action="expire",
            before=refused.events,
            log=refused.log,
        )
    return None


def _not_counted(
    requester: Requester, state: RequestState, decision: Decision, terms: Terms
) -> tuple[RefusalReason, str] | None:
    """Why this decision does not count (None: it counts)."""
    decider, approver = decision.decider, decision.approver
    if decider is None:
        return "not_an_approver", "unknown to the Identity Store"
    if (decider.user_id, decider.user_name) != (approver.user_id, approver.user_name):
        return "not_an_approver", "the approver's identity does not match the directory"
    check = may_decide(terms.approval, requester=requester, decider=decider)
    if not check:
        return "not_an_approver", check.reason
    if any(is_same_person(v.decider, decider) for v in state.votes):
        return "already_decided", "already decided this request"
    return None


def _counted_entry(
    decision: Decision, person: Person, groups: tuple[str, ...], key: str | None
) -> LogEntry:
    # The person key is kept so the decider's other accounts count as them later.
    return LogEntry(
        decision.action, "counted", person, groups, comment=decision.comment, actor_person_key=key
    )


def _count(
    requester: Requester,
    state: RequestState,
    decision: Decision,
    decider: User,
    terms: Terms,
    groups: tuple[str, ...],
    deadline: datetime,
    now: datetime,
) -> Outcome:
    """Count the decision; approve or reject when the rule's tally says so."""
    details, rule, action = state.details, terms.approval, decision.action
    vote = Vote(decider=decider, approve=decision.approve, at=now)
    votes = (*state.votes, vote)
    counted = tally(rule, requester, votes, submitted_at=state.submitted_at, now=now)
    person = person_of(decider, decision.approver.email)
    recorded = DecisionRecorded(
        request_id=details.request_id,
        approver=person,
        decision=action,
        comment=decision.comment,
        approvals_so_far=len(counted.approvers),
        required_approvals=rule.required_approvals,
    )
    entry = _counted_entry(decision, person, groups, decider.person_key)
    base = Outcome(
        "pending",
        events=(recorded,),
        log=(entry,),
        deadline=deadline,
        terms=terms,
        approvers=counted.approvers,
        counted=vote,
    )
    if counted.status == "approved":
        approved = RequestApproved(snapshot=snapshot_of(details, terms, counted.approvers))
        return replace(
            base,
            status="approved",
            events=(recorded, approved),
            log=(entry, LogEntry(action, "approved", person)),
            deadline=None,
        )
    if counted.status == "rejected":
        rejecter = _rejecter(counted.rejecters, votes) or person
        rejected = RequestRejected(
            request_id=details.request_id,
            rejected_by=rejecter,
            comment=decision.comment if rejecter.user_id == person.user_id else None,
        )
        return replace(
            base,
            status="rejected",
            events=(recorded, rejected),
            log=(entry, LogEntry(action, "rejected", rejecter)),
            deadline=None,
        )
    return base


def _rejecter(names: Sequence[str], votes: Sequence[Vote]) -> Person | None:
    for vote in votes:
        if names and not vote.approve and vote.decider.user_name == names[0]:
            return person_of(vote.decider)
    return None


def cancel(state: RequestState, *, by: Person, reason: str | None) -> Outcome:
    """The requester (or an admin, as request-api allows) cancelled the request."""
    if state.status == "pending":
        return Outcome("cancelled", log=(LogEntry("cancel", "cancelled", by, comment=reason),))
    if state.status == "approved":
        # Approved-then-cancelled: grant-worker revokes (it reads the cancel too).
        return Outcome(
            "cancelled",
            log=(
                LogEntry(
                    "cancel",
                    "cancelled",
                    by,
                    detail="cancelled after approval",
                    comment=reason,
                ),
            ),
            cancelled_after_approval=True,
        )
    return Outcome(
        state.status,
        log=(
            LogEntry(
                "cancel",
                "ignored",
                by,
                detail=f"the request is already {state.status}",
                comment=reason,
            ),
        ),
    )


def expire(state: RequestState, *, terms_deadline: datetime | None, now: datetime) -> Outcome:
    """The expiry timer fired. `terms_deadline` is the deadline under the approval rule in
    force now (None: keep the recorded one); a later one re-arms the timer."""
    if state.status != "pending":
        return Outcome(state.status)
    deadline = terms_deadline or state.deadline
    if deadline is not None and now < deadline:
        return Outcome("pending", deadline=deadline)
    # Expired at the deadline itself (not when the timer ran): a replay says the same.
    at = deadline if deadline is not None else now
    return _expired(state.details, state.submitted_at, at, actor=SYSTEM, action="expire")
