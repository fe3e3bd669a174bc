"""approval's use cases, each inside the caller's transaction (the consumer's or the
timer runner's): load the request row, ask the directory and the policy in force,
apply the pure domain function, then write the outcome (`store.apply`).

Time is the cause's: a submission is judged at its event time, a decision at its own, an
expiry at its deadline — never the wall clock — so a replay into an empty database decides
the same and, with ids derived from the causes (elevate_core.causes), publishes the same
events, which every consumer's dedupe drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from elevate_core.directory.errors import DirectoryError, UserNotFoundError, both
from elevate_core.directory.models import User
from elevate_core.errors import TransientError
from elevate_core.events.models import (
    DecidedUnder,
    DecisionRefused,
    DecisionSubmitted,
    Person,
    RequestCancelled,
    RequestDetails,
    RequestSubmitted,
)
from elevate_core.outbox import Outbox
from elevate_core.policy import Policy, Terms, pending_deadline
from elevate_core.policy.recheck import Limits, Refusal, RequestFacts, judge
from elevate_core.recheck import (
    DirectoryUnavailableError,
    RecheckDirectory,
    look_up,
    report,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_approval import domain, metrics, store
from elevate_approval.models import ApprovalRequest
from elevate_approval.store import EXPIRE, Step

__all__ = [
    "EXPIRE",
    "Deps",
    "DirectoryUnavailableError",
    "cancel_request",
    "decide",
    "expire",
    "submit",
]

log = logging.getLogger("elevate.approval")


class DirectoryPort(RecheckDirectory, Protocol):
    """What approval reads: users (decider, requester), accounts and permission sets."""


class PolicySource(Protocol):
    @property
    def policy(self) -> Policy: ...
    def poll(self) -> Any: ...


class ExpiryNotYetError(TransientError):
    """The requests consumer has not yet read everything published before this expiry
    fired (a replay, a lagging consumer): expire only once it has, so a decision made in
    time is counted first — live and in a replay alike."""


@dataclass(frozen=True, slots=True)
class Deps:
    outbox: Outbox
    directory: DirectoryPort
    policy: PolicySource
    # When set, an expiry waits until this says the requests consumer has caught up with
    # what was published until the timer fired (key: the timer key).
    expiry_gate: Callable[[str], Awaitable[bool]] | None = None
    expiry_grace: timedelta = timedelta(0)
    # How far after its submission a request may start (the shared request_horizon_days).
    horizon: timedelta = timedelta(days=30)


# ---- asking the directory and the policy --------------------------------------------


async def _fresh_user(directory: DirectoryPort, person: Person) -> User | None:
    """The user with `person`'s name as the Identity Store knows them now (group membership
    decides); read by the id the event names, which is believed only if that user has the
    name — the decision still compares both (domain)."""
    directory.invalidate_user(person.user_name)
    try:
        return await directory.get_user(person.user_name, expected_id=person.user_id)
    except UserNotFoundError:
        return None
    except DirectoryError as exc:
        raise DirectoryUnavailableError(f"directory: {exc}") from exc


async def _recheck(
    session: AsyncSession,
    deps: Deps,
    details: RequestDetails,
    policy: Policy,
    *,
    submitted_at: datetime,
) -> tuple[Terms | None, Refusal | None, User | None]:
    """The request re-checked under `policy` with the requester's groups, the account's
    place in the organisation and the permission set as they are now: its terms, or why
    it may not be approved (reported — log and alert metric — once this commits); and the
    requester as the directory knows them now (their person key: separation of duties)."""
    facts = RequestFacts.of(details, submitted_at=submitted_at)
    found = await look_up(deps.directory, facts)
    verdict = judge(facts, found, policy=policy, limits=Limits(horizon=deps.horizon))
    if isinstance(verdict, Terms):
        return verdict, None, found.user
    refusal, rid = verdict, str(details.request_id)
    metrics.after_commit(session, lambda: report(refusal, service="approval", request_id=rid))
    return None, refusal, found.user


async def _policy(deps: Deps, cause_version: str | None) -> tuple[Policy, DecidedUnder]:
    """The policy to decide under. If the cause was checked under another version, the
    file is re-read once first (request-api may have loaded a newer file a moment before
    us); whatever is in force then decides — for a replay or an old request that is the
    current policy — and the outcome records that the versions differed."""
    policy = deps.policy.policy
    if cause_version is not None and cause_version != policy.version:
        await asyncio.to_thread(deps.policy.poll)
        policy = deps.policy.policy
    differed = cause_version is not None and cause_version != policy.version
    if differed:
        log.warning(
            "deciding under policy %s; the cause was checked under %s",
            policy.version,
            cause_version,
        )
    under = DecidedUnder(
        policy_version=policy.version, cause_policy_version=cause_version, differed=differed
    )
    return policy, under


async def _write(session: AsyncSession, deps: Deps, row: ApprovalRequest, step: Step) -> None:
    await store.apply(
        session, outbox=deps.outbox, row=row, step=step, expiry_grace=deps.expiry_grace
    )


# ---- the use cases ------------------------------------------------------------------


async def submit(
    session: AsyncSession, *, deps: Deps, event: RequestSubmitted, event_id: str, at: datetime
) -> None:
    """A new request: approve at once (auto, break-glass), or wait for approvers."""
    rid = str(event.request_id)
    if await store.lock_request(session, rid) is not None:
        log.info("request %s is already known; submission %s ignored", rid, event_id)
        return
    details = RequestDetails.model_validate(event.model_dump())
    policy, under = await _policy(deps, details.policy_version)
    terms, refusal, _ = await _recheck(session, deps, details, policy, submitted_at=at)
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
        submitted_at=at,
        approvers=[],
        updated_at=at,
    )
    session.add(row)
    metrics.after_commit(session, metrics.PENDING.inc)
    outcome = domain.submit(
        details,
        terms=terms,
        refusal=refusal,
        policy_version=policy.version,
        submitted_at=at,
        now=at,
    )
    await _write(session, deps, row, Step(outcome, under, event_id, at))
    if details.break_glass and outcome.status == "approved":
        log.warning(
            "break-glass access approved for %s on %s (%s); flagged for review",
            details.requester.user_name,
            details.account_id,
            details.permission_set_name,
            extra={"ctx_severity": "high", "ctx_break_glass": True},
        )


async def decide(
    session: AsyncSession, *, deps: Deps, event: DecisionSubmitted, event_id: str, at: datetime
) -> None:
    """An approver's approve/reject, checked against the policy and directory now, and
    against the deadline at the decision's own time."""
    rid = str(event.request_id)
    row = await store.lock_request(session, rid)
    policy, under = await _policy(deps, event.policy_version)
    if row is None:
        log.warning("decision %s for unknown request %s refused", event_id, rid)
        refused = DecisionRefused(
            request_id=event.request_id,
            approver=event.approver,
            reason="request_final",
            detail="no such request",
            decided_under=under,
        )
        await deps.outbox.add(session, refused, subject=rid)
        return
    state = await store.state_of(session, row)
    decider: User | None = None
    requester: User | None = None
    terms: Terms | None = None
    refusal: Refusal | None = None
    if state.status == "pending":
        # Both read the directory fresh; side by side, the decision waits for one of them.
        decider, (terms, refusal, requester) = await both(
            _fresh_user(deps.directory, event.approver),
            _recheck(session, deps, state.details, policy, submitted_at=state.submitted_at),
        )
    outcome = domain.decide(
        state,
        domain.Decision(
            approver=event.approver,
            decider=decider,
            approve=event.decision == "approve",
            comment=event.comment,
        ),
        requester=requester,
        terms=terms,
        refusal=refusal,
        policy_version=policy.version,
        now=at,
    )
    await _write(session, deps, row, Step(outcome, under, event_id, at))


async def cancel_request(
    session: AsyncSession, *, deps: Deps, event: RequestCancelled, event_id: str, at: datetime
) -> None:
    """No further decision on a cancelled request; its expiry timer goes."""
    rid = str(event.request_id)
    row = await store.lock_request(session, rid)
    if row is None:
        log.warning("cancel %s for unknown request %s ignored", event_id, rid)
        return
    state = await store.state_of(session, row)
    outcome = domain.cancel(state, by=event.cancelled_by, reason=event.reason)
    _, under = await _policy(deps, None)
    await _write(session, deps, row, Step(outcome, under, event_id, at))


async def expire(
    session: AsyncSession, *, deps: Deps, request_id: str, timer_key: str, due: datetime
) -> None:
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
    if deps.expiry_gate is not None and not await deps.expiry_gate(timer_key):
        raise ExpiryNotYetError(f"expiry of {request_id}: the requests consumer is behind")
    policy, under = await _policy(deps, row.policy_version)
    rule = policy.approval_rules.get(row.approval_rule or "")
    current = (
        pending_deadline(rule, row.submitted_at)
        if rule is not None and not rule.auto_approve
        else None
    )
    state = await store.state_of(session, row)
    now = due - deps.expiry_grace
    outcome = domain.expire(state, terms_deadline=current, now=now)
    await _write(session, deps, row, Step(outcome, under, None, now, firing_timer=timer_key))
