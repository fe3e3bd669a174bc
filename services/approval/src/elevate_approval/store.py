"""approval's persistence: load a request (locked) with its counted votes, and write an
`Outcome` — decision log, new state, outbox events and expiry timer — in the caller's
transaction.

Lock order is timer rows, then the request row, in every path, so a decision and the
expiry timer of the same request serialise instead of deadlocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from elevate_core.directory.models import User
from elevate_core.events.models import DecidedUnder, RequestDetails
from elevate_core.outbox import Outbox
from elevate_core.policy import Vote
from elevate_core.timers import Timer, cancel, schedule
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_approval import domain, metrics
from elevate_approval.models import ApprovalRequest, DecisionLogEntry

EXPIRE = "approval.expire"


async def lock_request(session: AsyncSession, request_id: UUID | str) -> ApprovalRequest | None:
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


async def state_of(session: AsyncSession, row: ApprovalRequest) -> domain.RequestState:
    entries = (
        await session.execute(
            select(DecisionLogEntry)
            .where(
                DecisionLogEntry.request_id == row.request_id,
                DecisionLogEntry.outcome == "counted",
            )
            .order_by(DecisionLogEntry.id)
        )
    ).scalars()
    votes = tuple(
        Vote(
            decider=User(
                user_id=e.actor_user_id,
                user_name=e.actor_user_name,
                groups=frozenset(e.actor_groups),
                person_key=e.actor_person_key,
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


@dataclass(frozen=True, slots=True)
class Step:
    """One use case's result to write: what happened, under which policy, caused by what."""

    outcome: domain.Outcome
    under: DecidedUnder
    event_id: str | None
    at: datetime  # the cause's time (never the wall clock: a replay writes the same)
    firing_timer: str | None = None


async def apply(
    session: AsyncSession,
    *,
    outbox: Outbox,
    row: ApprovalRequest,
    step: Step,
    expiry_grace: timedelta,
) -> None:
    _append_log(session, row.request_id, step)
    for event in step.outcome.events:
        stamped = event.model_copy(update={"decided_under": step.under})
        await outbox.add(session, stamped, subject=row.request_id)
    was = row.status
    _update_row(row, step)
    _observe(session, row, step, was=was)
    await _arm(
        session, row, step.outcome.deadline, firing_timer=step.firing_timer, grace=expiry_grace
    )


def _append_log(session: AsyncSession, request_id: str, step: Step) -> None:
    for entry in step.outcome.log:
        detail = entry.detail
        if step.under.differed:
            note = (
                f"decided under policy {step.under.policy_version}, "
                f"the cause named {step.under.cause_policy_version}"
            )
            detail = f"{detail}; {note}" if detail else note
        session.add(
            DecisionLogEntry(
                request_id=request_id,
                at=step.at,
                action=entry.action,
                actor_user_name=entry.actor.user_name,
                actor_user_id=entry.actor.user_id,
                actor_groups=list(entry.groups),
                actor_person_key=entry.actor_person_key,
                outcome=entry.outcome,
                reason=entry.reason,
                detail=detail,
                comment=entry.comment,
                policy_version=step.under.policy_version,
                event_id=step.event_id,
            )
        )
        if entry.action in ("approve", "reject") and entry.outcome in ("counted", "refused"):
            result = entry.outcome if entry.reason is None else f"refused_{entry.reason}"
            metrics.after_commit(session, metrics.DECISIONS.labels(result).inc)


def _update_row(row: ApprovalRequest, step: Step) -> None:
    outcome, at = step.outcome, step.at
    row.status = outcome.status
    row.updated_at = at
    row.policy_version = step.under.policy_version
    if outcome.terms is not None:
        row.rule = outcome.terms.rule
        row.approval_rule = outcome.terms.approval.name
        row.required_approvals = outcome.terms.approval.needed
    if outcome.approvers:
        row.approvers = list(outcome.approvers)
    if outcome.review is not None:
        row.review = outcome.review
    if outcome.status == "approved" and row.approved_at is None:
        row.approved_at = at
    if outcome.status == "cancelled":
        row.cancelled_at = at


def _observe(session: AsyncSession, row: ApprovalRequest, step: Step, *, was: str) -> None:
    outcome = step.outcome
    if step.under.differed:
        metrics.after_commit(session, metrics.POLICY_DIFFERED.inc)
    if outcome.settled and was == "pending":
        row.decided_at = step.at
        rule = row.approval_rule or "none"
        label: str = outcome.status
        if label == "approved" and row.break_glass:
            label = "break_glass"
        elif label == "approved" and row.required_approvals == 0:
            label = "auto_approved"
        elapsed = max(0.0, (step.at - row.submitted_at).total_seconds())

        def observe(rule: str = rule, label: str = label, elapsed: float = elapsed) -> None:
            metrics.OUTCOMES.labels(rule, label).inc()
            metrics.TIME_TO_DECISION.labels(rule, label).observe(elapsed)
            metrics.PENDING.dec()

        metrics.after_commit(session, observe)
    if outcome.cancelled_after_approval:
        late = metrics.OUTCOMES.labels(row.approval_rule or "none", "cancelled_after_approval")
        metrics.after_commit(session, late.inc)


async def _arm(
    session: AsyncSession,
    row: ApprovalRequest,
    deadline: datetime | None,
    *,
    firing_timer: str | None,
    grace: timedelta,
) -> None:
    """Keep the expiry timer in line with the deadline (None: no timer). It fires `grace`
    after the deadline, so a decision made before the deadline but still in the writer's
    outbox is read first (docs/approval.md, "Expiry")."""
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
        session,
        kind=EXPIRE,
        key=key,
        due_at=deadline + grace,
        payload={"request_id": row.request_id},
    )
