"""grant-worker's state changes, each inside the caller's transaction, with the events
they imply written to the outbox in the same transaction. Plain functions; the consumers,
timers and the assignment worker call them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from elevate_core import timers
from elevate_core.events.base import Event
from elevate_core.events.models import (
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    GrantScheduled,
    RequestApproved,
    RequestSnapshot,
    StandingAssignmentRecorded,
)
from elevate_core.notify import mark
from elevate_core.outbox import Outbox
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker.aws import Triple
from elevate_grant_worker.domain import (
    AssignmentState,
    GrantState,
    StopReason,
    TripleView,
    on_activation_due,
    on_approved,
    on_stop,
)
from elevate_grant_worker.metrics import GRANT_TRANSITIONS
from elevate_grant_worker.models import Assignment, Grant, Standing, Stop

log = logging.getLogger(__name__)
WORK_CHANNEL = "elevate_grant_worker"
ACTIVATE_TIMER = "grant.activate"
EXPIRE_TIMER = "grant.expire"
_GRANT_NS = uuid.UUID("6f0c2a8e-4a8b-4c61-9a53-3f1d5f0e7a11")


def grant_id_for(request_id: uuid.UUID | str) -> str:
    """Deterministic: a replay into an empty database names the grant the same."""
    return str(uuid.uuid5(_GRANT_NS, str(request_id)))


def triple_of(grant: Grant) -> Triple:
    return Triple(grant.account_id, grant.permission_set_arn, grant.principal_id)


def snapshot_of(grant: Grant) -> RequestSnapshot:
    return RequestSnapshot.model_validate(grant.snapshot)


async def _emit(session: AsyncSession, outbox: Outbox, grant: Grant, event: Event) -> None:
    await outbox.add(session, event, subject=grant.request_id)


def _move(grant: Grant, state: GrantState) -> None:
    grant.state = state.value
    GRANT_TRANSITIONS.labels(state.value).inc()


# ---- consumers ----


async def approve(
    session: AsyncSession, *, event: RequestApproved, outbox: Outbox, now: datetime
) -> Grant | None:
    """Create the grant and its durable timers. Replays change nothing."""
    snap = event.snapshot
    request_id = str(snap.request_id)
    existing = (
        await session.execute(select(Grant).where(Grant.request_id == request_id))
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    stopped = await session.get(Stop, request_id) is not None
    outcome = on_approved(start=snap.start, end=snap.end, now=now, stopped=stopped)
    grant = Grant(
        grant_id=grant_id_for(snap.request_id),
        request_id=request_id,
        account_id=snap.account_id,
        permission_set_arn=snap.permission_set_arn,
        principal_id=snap.requester.user_id,
        start_at=snap.start,
        end_at=snap.end,
        snapshot=snap.model_dump(mode="json"),
        state=GrantState.SCHEDULED.value,
        created_at=now,
    )
    session.add(grant)
    if outcome == "lapsed":
        _move(grant, GrantState.LAPSED)
        log.info("grant %s: end %s already passed; never activated", grant.grant_id, snap.end)
        return grant
    if outcome == "stopped":
        _move(grant, GrantState.CANCELLED)
        return grant
    due = snap.start if outcome == "schedule" else now
    await timers.schedule(session, kind=ACTIVATE_TIMER, key=grant.grant_id, due_at=due)
    await timers.schedule(session, kind=EXPIRE_TIMER, key=grant.grant_id, due_at=snap.end)
    if outcome == "schedule":
        await _emit(
            session,
            outbox,
            grant,
            GrantScheduled(
                grant_id=uuid.UUID(grant.grant_id), snapshot=snap, activates_at=snap.start
            ),
        )
    return grant


async def stop(
    session: AsyncSession, *, request_id: str, reason: StopReason, now: datetime
) -> Grant | None:
    """End time, revoke or cancel. Before activation the assignment is never created;
    after it, the grant is revoked (the assignment worker does the AWS part)."""
    grant = (
        await session.execute(select(Grant).where(Grant.request_id == request_id).with_for_update())
    ).scalar_one_or_none()
    if grant is None:
        if reason != "expired" and await session.get(Stop, request_id) is None:
            session.add(Stop(request_id=request_id, kind=reason, at=now))
        return None
    new = on_stop(state=GrantState(grant.state), reason=reason)
    if new is None:
        return grant
    _move(grant, new)
    if new is GrantState.REVOKING:
        grant.end_reason = reason
        grant.stop_requested_at = min(now, grant.end_at) if reason == "expired" else now
        await mark(session, WORK_CHANNEL)
    else:
        await timers.cancel(session, kind=ACTIVATE_TIMER, key=grant.grant_id)
        await timers.cancel(session, kind=EXPIRE_TIMER, key=grant.grant_id)
    return grant


# ---- timers ----


async def activation_due(session: AsyncSession, *, grant_id: str, now: datetime) -> None:
    grant = (
        await session.execute(select(Grant).where(Grant.grant_id == grant_id).with_for_update())
    ).scalar_one_or_none()
    if grant is None:
        return
    new = on_activation_due(state=GrantState(grant.state), end=grant.end_at, now=now)
    if new is None:
        return
    _move(grant, new)
    if new is GrantState.ACTIVATING:
        await mark(session, WORK_CHANNEL)


async def expiry_due(session: AsyncSession, *, grant_id: str, now: datetime) -> None:
    grant = await session.get(Grant, grant_id)
    if grant is not None:
        await stop(session, request_id=grant.request_id, reason="expired", now=now)


# ---- the assignment worker's transactions ----


@dataclass
class TripleState:
    assignment: Assignment
    grants: Sequence[Grant]
    standing: bool

    @property
    def view(self) -> TripleView:
        states = [GrantState(g.state) for g in self.grants]
        return TripleView(
            assignment=AssignmentState(self.assignment.state),
            activating=states.count(GrantState.ACTIVATING),
            active=states.count(GrantState.ACTIVE),
            revoking=states.count(GrantState.REVOKING),
            standing=self.standing,
        )

    def in_state(self, state: GrantState) -> list[Grant]:
        return [g for g in self.grants if g.state == state.value]


async def load(session: AsyncSession, triple: Triple, *, now: datetime) -> TripleState:
    """The triple's assignment row (locked; created as `absent` if new) and live grants."""
    key = (triple.account_id, triple.permission_set_arn, triple.principal_id)
    row = await session.get(Assignment, key, with_for_update=True)
    if row is None:
        row = Assignment(
            account_id=key[0],
            permission_set_arn=key[1],
            principal_id=key[2],
            state=AssignmentState.ABSENT.value,
            attempts=0,
            alerted=False,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
    grants = (
        (
            await session.execute(
                select(Grant)
                .where(
                    Grant.account_id == triple.account_id,
                    Grant.permission_set_arn == triple.permission_set_arn,
                    Grant.principal_id == triple.principal_id,
                    Grant.state.in_(
                        [GrantState.ACTIVATING, GrantState.ACTIVE, GrantState.REVOKING]
                    ),
                )
                .order_by(Grant.created_at, Grant.grant_id)
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    standing = await session.get(Standing, key) is not None
    return TripleState(row, grants, standing)


def set_assignment(row: Assignment, state: AssignmentState, *, now: datetime) -> None:
    row.state = state.value
    row.request_id = None
    row.updated_at = now


async def settle(
    session: AsyncSession, ts: TripleState, *, outbox: Outbox, now: datetime, removed: bool
) -> None:
    """Activate waiting holders if the assignment is there; end revoking grants."""
    if ts.assignment.state == AssignmentState.PRESENT.value:
        for grant in ts.in_state(GrantState.ACTIVATING):
            _move(grant, GrantState.ACTIVE)
            grant.activated_at = now
            await _emit(
                session,
                outbox,
                grant,
                GrantActivated(
                    grant_id=uuid.UUID(grant.grant_id),
                    snapshot=snapshot_of(grant),
                    activated_at=now,
                ),
            )
    for grant in ts.in_state(GrantState.REVOKING):
        _move(grant, GrantState.ENDED)
        grant.ended_at = now
        grant.assignment_removed = removed
        reason: StopReason = (
            "revoked"
            if grant.end_reason == "revoked"
            else "cancelled"
            if grant.end_reason == "cancelled"
            else "expired"
        )
        await _emit(
            session,
            outbox,
            grant,
            GrantEnded(
                grant_id=uuid.UUID(grant.grant_id),
                snapshot=snapshot_of(grant),
                reason=reason,
                ended_at=now,
                assignment_removed=removed,
            ),
        )
        await timers.cancel(session, kind=EXPIRE_TIMER, key=grant.grant_id)


async def fail_activations(
    session: AsyncSession, ts: TripleState, *, outbox: Outbox, reason: str, code: str | None
) -> None:
    for grant in ts.in_state(GrantState.ACTIVATING):
        _move(grant, GrantState.FAILED)
        grant.failure = reason
        await timers.cancel(session, kind=EXPIRE_TIMER, key=grant.grant_id)
        await _emit(
            session,
            outbox,
            grant,
            GrantFailed(
                grant_id=uuid.UUID(grant.grant_id),
                snapshot=snapshot_of(grant),
                reason=reason,
                aws_error_code=code,
            ),
        )


async def alert_revocation(
    session: AsyncSession,
    ts: TripleState,
    *,
    outbox: Outbox,
    error: str,
    next_attempt_at: datetime | None,
) -> None:
    for grant in ts.in_state(GrantState.REVOKING):
        await _emit(
            session,
            outbox,
            grant,
            GrantRevocationFailed(
                grant_id=uuid.UUID(grant.grant_id),
                snapshot=snapshot_of(grant),
                error=error[:1000],
                attempts=max(1, ts.assignment.attempts),
                next_attempt_at=next_attempt_at,
            ),
        )


async def record_standing(
    session: AsyncSession,
    triple: Triple,
    *,
    source: str,
    outbox: Outbox | None,
    now: datetime,
    user_name: str | None = None,
    permission_set_name: str | None = None,
) -> bool:
    """Record a standing assignment (never removed); True if it is new."""
    key = (triple.account_id, triple.permission_set_arn, triple.principal_id)
    if await session.get(Standing, key) is not None:
        return False
    session.add(
        Standing(
            account_id=key[0],
            permission_set_arn=key[1],
            principal_id=key[2],
            source=source,
            recorded_at=now,
        )
    )
    if outbox is not None:
        await outbox.add(
            session,
            StandingAssignmentRecorded(
                account_id=triple.account_id,
                permission_set_arn=triple.permission_set_arn,
                principal_id=triple.principal_id,
                permission_set_name=permission_set_name,
                user_name=user_name,
                source="policy" if source == "policy" else "baseline",
            ),
            subject=None,
            key=triple.account_id,
        )
    return True
