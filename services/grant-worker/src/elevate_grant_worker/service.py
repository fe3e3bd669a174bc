"""grant-worker's state changes, each inside the caller's transaction, with the events they
imply written to the outbox in the same transaction. The consumers only *record facts*
(an approval, a stop) and ask for a look; the assignment worker (`worker.py`) derives what
AWS should hold and does the rest.

Lock order (see models.py): triple row → grant rows → lease row. `approve` and `stop` lock
only the request's grant row: the one lock that decides a cancel racing its approval.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from elevate_core.db import insert_for
from elevate_core.events.base import Event
from elevate_core.events.models import (
    DriftDetected,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    GrantScheduled,
    RequestApproved,
    RequestSnapshot,
    StandingAssignmentDropped,
    StandingAssignmentRecorded,
)
from elevate_core.notify import mark
from elevate_core.outbox import Outbox
from sqlalchemy import event, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker.aws import Triple
from elevate_grant_worker.domain import (
    AssignmentState,
    GrantFacts,
    GrantState,
    Plan,
    StopKind,
    TripleFacts,
    replay_gate_passed,
)
from elevate_grant_worker.metrics import DRIFT, GRANT_TRANSITIONS
from elevate_grant_worker.models import Assignment, Grant, ManagedPair, Standing
from elevate_grant_worker.sessions import LONGEST_SESSION

log = logging.getLogger(__name__)
WORK_CHANNEL = "elevate_grant_worker"
_GRANT_NS = uuid.UUID("6f0c2a8e-4a8b-4c61-9a53-3f1d5f0e7a11")
LIVE = (GrantState.SCHEDULED.value, GrantState.ACTIVE.value)


def grant_id_for(request_id: uuid.UUID | str) -> str:
    """Deterministic: a replay into an empty database names the grant the same."""
    return str(uuid.uuid5(_GRANT_NS, str(request_id)))


def triple_of(grant: Grant) -> Triple:
    assert grant.account_id is not None
    assert grant.permission_set_arn is not None
    assert grant.principal_id is not None
    return Triple(grant.account_id, grant.permission_set_arn, grant.principal_id)


def triple_of_row(row: Assignment) -> Triple:
    return Triple(row.account_id, row.permission_set_arn, row.principal_id)


def snapshot_of(grant: Grant) -> RequestSnapshot:
    return RequestSnapshot.model_validate(grant.snapshot)


async def _emit(session: AsyncSession, outbox: Outbox, grant: Grant, event: Event) -> None:
    await outbox.add(session, event, subject=grant.request_id)


def _move(grant: Grant, state: GrantState) -> None:
    grant.state = state.value
    GRANT_TRANSITIONS.labels(state.value).inc()


# ---- the consumers: facts ----


async def _grant_row(session: AsyncSession, request_id: str, *, now: datetime) -> Grant:
    """The request's grant row, created if missing, locked. An approval and a stop of the
    same request both come through here, so they serialise on this one row."""
    grant_id = grant_id_for(request_id)
    await session.execute(
        insert_for(session, Grant)
        .values(
            grant_id=grant_id,
            request_id=request_id,
            state=GrantState.UNAPPROVED.value,
            created_at=now,
            needs_look=False,
        )
        .on_conflict_do_nothing()
    )
    return (
        await session.execute(
            select(Grant)
            .where(Grant.grant_id == grant_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


async def approve(
    session: AsyncSession,
    *,
    event: RequestApproved,
    outbox: Outbox,
    now: datetime,
    gate: dict[str, int] | None,
) -> Grant:
    """Record the approval (once: replays change nothing) and ask for a look."""
    snap = event.snapshot
    grant = await _grant_row(session, str(snap.request_id), now=now)
    if grant.snapshot is not None:
        return grant
    grant.account_id = snap.account_id
    grant.permission_set_arn = snap.permission_set_arn
    grant.principal_id = snap.requester.user_id
    grant.start_at = snap.start
    grant.end_at = snap.end
    grant.snapshot = snap.model_dump(mode="json")
    grant.gate = gate
    grant.needs_look = True
    _move(grant, GrantState.SCHEDULED)
    if grant.stop_kind is None and snap.start > now and snap.end > now:
        await _emit(
            session,
            outbox,
            grant,
            GrantScheduled(
                grant_id=uuid.UUID(grant.grant_id), snapshot=snap, activates_at=snap.start
            ),
        )
    await mark(session, WORK_CHANNEL, triple_of(grant).key())  # the worker starts on it
    return grant


async def stop(session: AsyncSession, *, request_id: str, kind: StopKind, now: datetime) -> Grant:
    """A cancel or revoke: recorded on the grant (or ahead of its approval), never lost."""
    grant = await _grant_row(session, request_id, now=now)
    if grant.stop_kind is not None or grant.state in (GrantState.ENDED, GrantState.FAILED):
        return grant
    grant.stop_kind = kind
    grant.stop_at = now
    grant.needs_look = grant.snapshot is not None
    await mark(session, WORK_CHANNEL, triple_of(grant).key() if grant.snapshot is not None else "")
    return grant


# ---- the assignment worker's transactions ----


@dataclass
class TripleState:
    assignment: Assignment
    grants: Sequence[Grant]
    standing: bool

    def facts(
        self, progress: dict[str, int], *, removal: bool = False, recheck: bool = False
    ) -> TripleFacts:
        """What the plan needs; with `recheck`, a grant not re-checked yet is not served."""
        return TripleFacts(
            assignment=AssignmentState(self.assignment.state),
            grants=tuple(
                GrantFacts(
                    grant_id=g.grant_id,
                    state=GrantState(g.state),
                    start=g.start_at,  # type: ignore[arg-type]  # approved: never None
                    end=g.end_at,  # type: ignore[arg-type]
                    stop=g.stop_kind,  # type: ignore[arg-type]
                    ready=replay_gate_passed(g.gate, progress),
                    checked=not recheck or g.rechecked_at is not None,
                )
                for g in self.grants
            ),
            standing=self.standing,
            found=self.assignment.found,
            removal=removal,
            drift_reported=self.assignment.drift_reported,
        )

    def grant(self, grant_id: str) -> Grant:
        return next(g for g in self.grants if g.grant_id == grant_id)

    @property
    def gated(self) -> bool:
        """Whether a not-yet-served grant waits on the replay gate."""
        return bool(self.gates())

    def gates(self) -> list[dict[str, int]]:
        """The replay gates of the grants not yet served."""
        return [g.gate for g in self.grants if g.gate and g.state == GrantState.SCHEDULED.value]


async def load(session: AsyncSession, triple: Triple, *, now: datetime) -> TripleState:
    """The triple's row (created `absent` if new), then its live grants — both locked."""
    key = (triple.account_id, triple.permission_set_arn, triple.principal_id)
    row = await session.get(Assignment, key, with_for_update=True, populate_existing=True)
    if row is None:  # first look at this triple (a concurrent first look may win the insert)
        await session.execute(
            insert_for(session, Assignment)
            .values(
                account_id=key[0],
                permission_set_arn=key[1],
                principal_id=key[2],
                state=AssignmentState.ABSENT.value,
                attempts=0,
                alerted=False,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        row = await session.get(Assignment, key, with_for_update=True, populate_existing=True)
    assert row is not None
    grants = (
        (
            await session.execute(
                select(Grant)
                .where(
                    Grant.account_id == triple.account_id,
                    Grant.permission_set_arn == triple.permission_set_arn,
                    Grant.principal_id == triple.principal_id,
                    Grant.state.in_(LIVE),
                )
                .order_by(Grant.grant_id)
                .with_for_update()
                .execution_options(populate_existing=True)
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


def confirmed(row: Assignment, state: AssignmentState, *, now: datetime) -> None:
    """AWS confirmed the write: the assignment is `state`, its tries and alert are over,
    and the triple is looked at again at once (its grants move on)."""
    set_assignment(row, state, now=now)
    row.attempts = 0
    row.last_error = None
    row.alerted = False
    row.next_check_at = now


async def settle(
    session: AsyncSession,
    ts: TripleState,
    plan: Plan,
    *,
    outbox: Outbox,
    now: datetime,
    sessions_cut: bool = False,
    session_duration: timedelta = LONGEST_SESSION,
) -> None:
    """Activate the grants the present assignment now serves; end those that are over
    (`sessions_cut`: their removal, in this transaction, recorded a session cut; else
    sessions already issued work for up to `session_duration` more)."""
    for grant_id in plan.activate:
        grant = ts.grant(grant_id)
        _move(grant, GrantState.ACTIVE)
        grant.activated_at = now
        await _emit(
            session,
            outbox,
            grant,
            GrantActivated(
                grant_id=uuid.UUID(grant.grant_id), snapshot=snapshot_of(grant), activated_at=now
            ),
        )
    for ending in plan.end:
        grant = ts.grant(ending.grant_id)
        _move(grant, GrantState.ENDED)
        grant.ended_at = now
        grant.end_reason = ending.reason
        grant.assignment_removed = ending.removed
        grant.needs_look = False
        await _emit(
            session,
            outbox,
            grant,
            GrantEnded(
                grant_id=uuid.UUID(grant.grant_id),
                snapshot=snapshot_of(grant),
                reason=ending.reason,
                ended_at=now,
                assignment_removed=ending.removed,
                sessions_cut=sessions_cut and ending.removed,
                sessions_valid_until=(
                    now + session_duration if ending.removed and not sessions_cut else None
                ),
            ),
        )


def looked_at(ts: TripleState, *, next_check_at: datetime | None, keep: Sequence[str] = ()) -> None:
    """Everything asked of this triple so far has been seen; look again at `next_check_at`
    (and whenever asked again: grants in `keep` still want a look)."""
    for grant in ts.grants:
        grant.needs_look = grant.grant_id in keep
    ts.assignment.next_check_at = next_check_at
    if ts.assignment.state == AssignmentState.ABSENT.value:
        ts.assignment.found = False  # a drift episode is over once the assignment is gone
        ts.assignment.drift_reported = False


async def fail_activations(
    session: AsyncSession,
    ts: TripleState,
    grant_ids: Sequence[str],
    *,
    outbox: Outbox,
    reason: str,
    code: str | None,
    reason_code: str | None = None,
) -> None:
    """`code`: AWS's error code; `reason_code`: the re-check's, when it refused."""
    for grant_id in grant_ids:
        grant = ts.grant(grant_id)
        _move(grant, GrantState.FAILED)
        grant.failure = reason
        grant.needs_look = False
        await _emit(
            session,
            outbox,
            grant,
            GrantFailed(
                grant_id=uuid.UUID(grant.grant_id),
                snapshot=snapshot_of(grant),
                reason=reason,
                aws_error_code=code,
                reason_code=reason_code,
            ),
        )


async def alert_revocation(
    session: AsyncSession,
    ts: TripleState,
    grant_ids: Sequence[str],
    *,
    outbox: Outbox,
    error: str,
    next_attempt_at: datetime | None,
) -> None:
    for grant_id in grant_ids:
        grant = ts.grant(grant_id)
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


# ---- managed pairs and the standing baseline ----


async def is_managed(session: AsyncSession, triple: Triple) -> bool:
    return (
        await session.get(ManagedPair, (triple.account_id, triple.permission_set_arn)) is not None
    )


async def manage(
    session: AsyncSession, account_id: str, permission_set_arn: str, *, now: datetime
) -> None:
    await session.execute(
        insert_for(session, ManagedPair)
        .values(account_id=account_id, permission_set_arn=permission_set_arn, since=now)
        .on_conflict_do_nothing()
    )


async def record_history(session: AsyncSession, event: Event, *, now: datetime) -> None:
    """grant-worker's own past, read back from the grants topic: which pairs it manages and
    what it recorded as standing (so a replay into an empty database knows both)."""
    if isinstance(event, GrantActivated | GrantEnded):
        snap = event.snapshot
        await manage(session, snap.account_id, snap.permission_set_arn, now=now)
    elif isinstance(event, StandingAssignmentRecorded | StandingAssignmentDropped | DriftDetected):
        await manage(session, event.account_id, event.permission_set_arn, now=now)
        triple = Triple(event.account_id, event.permission_set_arn, event.principal_id)
        if isinstance(event, StandingAssignmentRecorded):
            await record_standing(session, triple, source=event.source, outbox=None, now=now)
        elif isinstance(event, StandingAssignmentDropped):
            await drop_standing(session, triple, reason=event.reason, outbox=None)


async def permission_set_name(session: AsyncSession, pair: Triple) -> str | None:
    """The permission set's name as a grant on the pair carries it (for the audit trail)."""
    snapshot = (
        await session.execute(
            select(Grant.snapshot)
            .where(
                Grant.account_id == pair.account_id,
                Grant.permission_set_arn == pair.permission_set_arn,
                Grant.snapshot.is_not(None),
            )
            .limit(1)
        )
    ).scalar()
    return str(snapshot["permission_set_name"]) if snapshot else None


async def record_baseline(
    session: AsyncSession,
    triple: Triple,
    present: dict[str, str | None],
    *,
    outbox: Outbox,
    now: datetime,
    permission_set_name: str | None,
) -> int:
    """The pair comes under management: every user assignment AWS holds for it now is
    standing baseline (published). Returns how many were recorded."""
    if await is_managed(session, triple):
        return 0
    await manage(session, triple.account_id, triple.permission_set_arn, now=now)
    recorded = 0
    for principal_id, user_name in sorted(present.items()):
        if await record_standing(
            session,
            Triple(triple.account_id, triple.permission_set_arn, principal_id),
            source="baseline",
            outbox=outbox,
            now=now,
            user_name=user_name,
            permission_set_name=permission_set_name,
        ):
            recorded += 1
    return recorded


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


async def standing_of_source(session: AsyncSession, source: str) -> list[Triple]:
    rows = (await session.execute(select(Standing).where(Standing.source == source))).scalars()
    return [Triple(r.account_id, r.permission_set_arn, r.principal_id) for r in rows]


async def look_at(session: AsyncSession, triple: Triple, *, now: datetime) -> None:
    """Ask the worker to reconcile this triple now."""
    ts = await load(session, triple, now=now)
    ts.assignment.next_check_at = now
    await mark(session, WORK_CHANNEL)


async def drop_standing(
    session: AsyncSession,
    triple: Triple,
    *,
    reason: str,
    outbox: Outbox | None,
    source: str | None = None,
) -> bool:
    """A standing entry stops backing its assignment (published); True if there was one."""
    key = (triple.account_id, triple.permission_set_arn, triple.principal_id)
    row = await session.get(Standing, key)
    if row is None or (source is not None and row.source != source):
        return False
    await session.delete(row)
    if outbox is not None:
        await outbox.add(
            session,
            StandingAssignmentDropped(
                account_id=triple.account_id,
                permission_set_arn=triple.permission_set_arn,
                principal_id=triple.principal_id,
                source="policy" if row.source == "policy" else "baseline",
                reason="policy_removed" if reason == "policy_removed" else "assignment_gone",
            ),
            subject=None,
            key=triple.account_id,
        )
    return True


async def report_drift(
    session: AsyncSession,
    triple: Triple,
    *,
    kind: Literal["unexpected_assignment", "missing_assignment"],
    action: Literal["reported", "removed", "restored"],
    outbox: Outbox,
    user_name: str | None = None,
    permission_set_name: str | None = None,
) -> None:
    DRIFT.labels(kind, action).inc()
    log.warning("drift on %s: %s, %s", triple, kind, action)
    await outbox.add(
        session,
        DriftDetected(
            account_id=triple.account_id,
            permission_set_arn=triple.permission_set_arn,
            permission_set_name=permission_set_name,
            principal_id=triple.principal_id,
            kind=kind,
            action=action,
            user_name=user_name,
        ),
        subject=None,
        key=triple.account_id,
    )


@event.listens_for(Assignment, "before_update")
def _count_writes(_mapper: Any, _connection: Any, target: Assignment) -> None:
    """Count changes of what is recorded of AWS (not bookkeeping such as next_check_at), so a
    sweep can tell whether its listing is still comparable with the row."""
    attrs = sa_inspect(target).attrs
    if attrs.state.history.has_changes() or attrs.request_id.history.has_changes():
        target.version = (target.version or 0) + 1
