"""approval's use cases, each inside the caller's transaction (the consumer's or the
timer runner's): load the request row, ask the directory and the policy in force,
apply the pure domain function, then write the decision log, the new state, the
outbox events and the expiry timer together.

Lock order is timer rows, then the request row, in every path, so a decision and the
expiry timer of the same request serialise instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from elevate_core.clock import Clock
from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    UserNotFoundError,
)
from elevate_core.directory.models import Account, User
from elevate_core.errors import TransientError
from elevate_core.events.models import (
    DecisionRefused,
    DecisionSubmitted,
    RequestCancelled,
    RequestDetails,
    RequestSubmitted,
)
from elevate_core.outbox import Outbox
from elevate_core.policy import Policy, Terms, Vote, evaluate_request, pending_deadline
from elevate_core.timers import Timer, cancel, schedule
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_approval import domain, metrics
from elevate_approval.models import ApprovalRequest, DecisionLogEntry

log = logging.getLogger("elevate.approval")

EXPIRE = "approval.expire"


class DirectoryPort(Protocol):
    async def get_user(self, user_name: str) -> User: ...
    async def get_account(self, account_id: str) -> Account: ...
    def invalidate_user(self, user_name: str) -> None: ...


class PolicySource(Protocol):
    @property
    def policy(self) -> Policy: ...
    def poll(self) -> Any: ...


class DirectoryUnavailableError(TransientError):
    """The directory cannot answer right now: transient, so the consumer waits and
    retries instead of dead-lettering a message that is fine."""


@dataclass(frozen=True, slots=True)
class Deps:
    outbox: Outbox
    directory: DirectoryPort
    policy: PolicySource
    clock: Clock


# ---- loading ------------------------------------------------------------------------


async def _lock_request(session: AsyncSession, request_id: UUID | str) -> ApprovalRequest | None:
    rid = str(request_id)
    # Timers first (the runner holds its timer row while it waits for the request row).
    await session.execute(
        select(Timer.id).where(Timer.kind == EXPIRE, Timer.key.like(f"{rid}%")).with_for_update()
    )
    return (
        await session.execute(
            select(ApprovalRequest).where(ApprovalRequest.request_id == rid).with_for_update()
        )
    ).scalar_one_or_none()


async def _state(session: AsyncSession, row: ApprovalRequest) -> domain.RequestState:
    entries = (
        (
            await session.execute(
                select(DecisionLogEntry)
                .where(
                    DecisionLogEntry.request_id == row.request_id,
                    DecisionLogEntry.outcome == "counted",
                )
                .order_by(DecisionLogEntry.id)
            )
        )
        .scalars()
        .all()
    )
    votes = tuple(
        Vote(
            decider=User(
                user_id=e.actor_user_id,
                user_name=e.actor_user_name,
                groups=frozenset(e.actor_groups),
            ),
            approve=e.action == "approve",
            at=e.at,
        )
        for e in entries
    )
    status: domain.Status = row.status  # type: ignore[assignment]
    return domain.RequestState(
        details=RequestDetails.model_validate(row.details),
        status=status,
        submitted_at=row.submitted_at,
        votes=votes,
        deadline=row.deadline if row.status == "pending" else None,
    )


# ---- asking the directory and the policy --------------------------------------------


async def _fresh_user(directory: DirectoryPort, user_name: str) -> User | None:
    """The user as the Identity Store knows them now (group membership decides)."""
    directory.invalidate_user(user_name)
    try:
        return await directory.get_user(user_name)
    except UserNotFoundError:
        return None
    except DirectoryError as exc:
        raise DirectoryUnavailableError(f"directory: {exc}") from exc


async def _terms(deps: Deps, details: RequestDetails, policy: Policy) -> Terms | None:
    """The request's terms under `policy`, with the requester's groups and the account's
    place in the organisation as they are now; None if no longer eligible."""
    requester = await _fresh_user(deps.directory, details.requester.user_name)
    if requester is None or requester.user_id != details.requester.user_id:
        return None
    try:
        account = await deps.directory.get_account(details.account_id)
    except AccountNotFoundError:
        return None
    except DirectoryError as exc:
        raise DirectoryUnavailableError(f"directory: {exc}") from exc
    return evaluate_request(
        policy,
        requester,
        account,
        details.permission_set_name,
        break_glass=details.break_glass,
    )


async def _policy(deps: Deps, submitted_version: str | None = None) -> Policy:
    policy = deps.policy.policy
    if submitted_version is not None and submitted_version != policy.version:
        # request-api may have loaded a newer file a moment before us: look now.
        await asyncio.to_thread(deps.policy.poll)
        policy = deps.policy.policy
    return policy


# ---- writing ------------------------------------------------------------------------


async def _apply(
    session: AsyncSession,
    *,
    deps: Deps,
    row: ApprovalRequest,
    outcome: domain.Outcome,
    policy_version: str,
    event_id: str | None,
    now: datetime,
    firing_timer: str | None = None,
) -> None:
    rid = row.request_id
    for entry in outcome.log:
        session.add(
            DecisionLogEntry(
                request_id=rid,
                at=now,
                action=entry.action,
                actor_user_name=entry.actor.user_name,
                actor_user_id=entry.actor.user_id,
                actor_groups=list(entry.groups),
                outcome=entry.outcome,
                reason=entry.reason,
                detail=entry.detail,
                comment=entry.comment,
                policy_version=policy_version,
                event_id=event_id,
            )
        )
        if entry.action in ("approve", "reject") and entry.outcome in ("counted", "refused"):
            result = entry.outcome if entry.reason is None else f"refused_{entry.reason}"
            metrics.after_commit(session, metrics.DECISIONS.labels(result).inc)
    for event in outcome.events:
        await deps.outbox.add(session, event, subject=rid, time=now)

    was = row.status
    row.status = outcome.status
    row.updated_at = now
    row.policy_version = policy_version
    if outcome.terms is not None:
        row.rule = outcome.terms.rule
        row.approval_rule = outcome.terms.approval.name
        row.required_approvals = outcome.terms.approval.needed
    if outcome.approvers:
        row.approvers = list(outcome.approvers)
    if outcome.review is not None:
        row.review = outcome.review
    if outcome.status == "approved" and row.approved_at is None:
        row.approved_at = now
    if outcome.status == "cancelled":
        row.cancelled_at = now
    if outcome.settled and was == "pending":
        row.decided_at = now
        rule = row.approval_rule or "none"
        label: str = outcome.status
        if label == "approved" and row.break_glass:
            label = "break_glass"
        elif label == "approved" and row.required_approvals == 0:
            label = "auto_approved"
        elapsed = max(0.0, (now - row.submitted_at).total_seconds())

        def observe(rule: str = rule, label: str = label, elapsed: float = elapsed) -> None:
            metrics.OUTCOMES.labels(rule, label).inc()
            metrics.TIME_TO_DECISION.labels(rule, label).observe(elapsed)
            metrics.PENDING.dec()

        metrics.after_commit(session, observe)
    if outcome.cancelled_after_approval:
        late = metrics.OUTCOMES.labels(row.approval_rule or "none", "cancelled_after_approval")
        metrics.after_commit(session, late.inc)
    await _arm(session, row, outcome.deadline, firing_timer=firing_timer)


async def _arm(
    session: AsyncSession,
    row: ApprovalRequest,
    deadline: datetime | None,
    *,
    firing_timer: str | None,
) -> None:
    """Keep the expiry timer in line with the deadline (None: no timer)."""
    key = row.expiry_timer_key
    if deadline is None:
        if key is not None and key != firing_timer:
            await cancel(session, kind=EXPIRE, key=key)
        row.expiry_timer_key = None
        return
    if key is not None and key != firing_timer and row.deadline == deadline:
        return
    if key is None or key == firing_timer:
        # A firing timer is marked fired after this handler: re-arm under a new key.
        generation = int(key.rsplit("/", 1)[1]) + 1 if key and "/" in key else 2
        key = row.request_id if key is None else f"{row.request_id}/{generation}"
    row.deadline = deadline
    row.expiry_timer_key = key
    await schedule(
        session, kind=EXPIRE, key=key, due_at=deadline, payload={"request_id": row.request_id}
    )


# ---- the use cases ------------------------------------------------------------------


async def submit(
    session: AsyncSession,
    *,
    deps: Deps,
    event: RequestSubmitted,
    event_id: str,
    submitted_at: datetime,
) -> None:
    """A new request: approve at once (auto, break-glass), or wait for approvers."""
    rid = str(event.request_id)
    if await _lock_request(session, rid) is not None:
        log.info("request %s is already known; submission %s ignored", rid, event_id)
        return
    details = RequestDetails.model_validate(event.model_dump())
    policy = await _policy(deps, details.policy_version)
    terms = await _terms(deps, details, policy)
    now = deps.clock.now()
    row = ApprovalRequest(
        request_id=rid,
        details=details.model_dump(mode="json"),
        requester_user_name=details.requester.user_name,
        requester_user_id=details.requester.user_id,
        account_id=details.account_id,
        permission_set_name=details.permission_set_name,
        break_glass=details.break_glass,
        status="pending",
        required_approvals=0,
        submitted_policy_version=details.policy_version,
        policy_version=policy.version,
        submitted_at=submitted_at,
        approvers=[],
        updated_at=now,
    )
    session.add(row)
    metrics.after_commit(session, metrics.PENDING.inc)
    outcome = domain.submit(
        details, terms=terms, policy_version=policy.version, submitted_at=submitted_at, now=now
    )
    await _apply(
        session,
        deps=deps,
        row=row,
        outcome=outcome,
        policy_version=policy.version,
        event_id=event_id,
        now=now,
    )
    if details.break_glass and outcome.status == "approved":
        log.warning(
            "break-glass access approved for %s on %s (%s); flagged for review",
            details.requester.user_name,
            details.account_id,
            details.permission_set_name,
            extra={"ctx_severity": "high", "ctx_break_glass": True},
        )


async def decide(
    session: AsyncSession, *, deps: Deps, event: DecisionSubmitted, event_id: str
) -> None:
    """An approver's approve/reject, checked against the policy and directory now."""
    rid = str(event.request_id)
    row = await _lock_request(session, rid)
    policy = deps.policy.policy
    now = deps.clock.now()
    if row is None:
        log.warning("decision %s for unknown request %s refused", event_id, rid)
        await deps.outbox.add(
            session,
            DecisionRefused(
                request_id=event.request_id,
                approver=event.approver,
                reason="request_final",
                detail="no such request",
            ),
            subject=rid,
            time=now,
        )
        return
    state = await _state(session, row)
    decider: User | None = None
    terms: Terms | None = None
    if state.status == "pending":
        decider = await _fresh_user(deps.directory, event.approver.user_name)
        terms = await _terms(deps, state.details, policy)
    outcome = domain.decide(
        state,
        approver=event.approver,
        decider=decider,
        approve=event.decision == "approve",
        comment=event.comment,
        terms=terms,
        policy_version=policy.version,
        now=now,
    )
    await _apply(
        session,
        deps=deps,
        row=row,
        outcome=outcome,
        policy_version=policy.version,
        event_id=event_id,
        now=now,
    )


async def cancel_request(
    session: AsyncSession, *, deps: Deps, event: RequestCancelled, event_id: str
) -> None:
    """No further decision on a cancelled request; its expiry timer goes."""
    rid = str(event.request_id)
    row = await _lock_request(session, rid)
    if row is None:
        log.warning("cancel %s for unknown request %s ignored", event_id, rid)
        return
    state = await _state(session, row)
    outcome = domain.cancel(state, by=event.cancelled_by, reason=event.reason)
    await _apply(
        session,
        deps=deps,
        row=row,
        outcome=outcome,
        policy_version=deps.policy.policy.version,
        event_id=event_id,
        now=deps.clock.now(),
    )


async def expire(session: AsyncSession, *, deps: Deps, request_id: str, timer_key: str) -> None:
    """The expiry timer fired: expire the request if nothing settled it in time."""
    row = (
        await session.execute(
            select(ApprovalRequest)
            .where(ApprovalRequest.request_id == request_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None or row.expiry_timer_key != timer_key:
        return  # superseded or unknown: nothing to do
    policy = deps.policy.policy
    rule = policy.approval_rules.get(row.approval_rule or "")
    current = (
        pending_deadline(rule, row.submitted_at)
        if rule is not None and not rule.auto_approve
        else None
    )
    state = await _state(session, row)
    outcome = domain.expire(state, terms_deadline=current, now=deps.clock.now())
    await _apply(
        session,
        deps=deps,
        row=row,
        outcome=outcome,
        policy_version=policy.version,
        event_id=None,
        now=deps.clock.now(),
        firing_timer=timer_key,
    )
