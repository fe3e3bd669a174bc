"""audit-ingest's state changes, each inside the caller's transaction: the grant index,
correlation of records (with waiting for a grant not yet known) and the OCSF outbox rows."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from elevate_core.errors import ElevateError
from elevate_core.events.base import Event
from elevate_core.events.models import (
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantScheduled,
    RequestSnapshot,
    StandingAssignmentDropped,
    StandingAssignmentRecorded,
)
from elevate_core.events.topics import Topics
from elevate_core.outbox import Outbox
from elevate_core.timers import cancel, schedule
from prometheus_client import Counter, Histogram
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest import ocsf
from elevate_audit_ingest.correlate import (
    Correlation,
    GrantWindow,
    Outcome,
    RecordError,
    StandingAccess,
    TrailRecord,
    correlate,
    parse_record,
)
from elevate_audit_ingest.models import GrantRow, PendingRecord, StandingRow

log = logging.getLogger(__name__)
PENDING_TIMER = "audit.pending_record"

RECORDS_IN = Counter("elevate_audit_records_in_total", "CloudTrail records read", ["source"])
RECORDS_OUT = Counter(
    "elevate_audit_records_out_total", "Records published (queued)", ["topic", "class_uid"]
)
CORRELATED = Counter("elevate_audit_correlation_total", "Correlation outcomes", ["outcome"])
LAG = Histogram(
    "elevate_audit_lag_seconds",
    "eventTime to publish (cloudtrail: Kafka ack; audit: outbox commit)",
    ["stage"],
    buckets=(1, 5, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21600),
)
QUARANTINED = Counter("elevate_audit_quarantined_files_total", "CloudTrail files quarantined")


class UnreadableRecordError(ElevateError):
    """A record without eventID/eventTime: retrying cannot help, dead-letter it."""

    retryable = False


class ManagedScope:
    """The (account id, permission set) pairs the policy makes requestable, kept current
    by `PolicyScope` in main; None until known (then every Identity Center role counts)."""

    def __init__(self) -> None:
        self.pairs: frozenset[tuple[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class CorrelationConfig:
    grace: timedelta
    wait: timedelta
    managed: frozenset[str] | None = None  # None: every Identity Center permission set
    scope: ManagedScope | None = None  # from the policy, when no explicit list is set


def window_of(row: GrantRow) -> GrantWindow:
    """The grant's window: from activation (the scheduled start if it never activated)."""
    return GrantWindow(
        grant_id=row.grant_id,
        request_id=row.request_id,
        user_name=row.user_name,
        user_id=row.user_id,
        account_id=row.account_id,
        permission_set_name=row.permission_set_name,
        start=row.activated_at or row.scheduled_start,
        end=row.ended_at or row.scheduled_end,
        justification=row.justification,
        approvers=tuple(row.approvers),
        ticket=row.ticket,
        break_glass=row.break_glass,
    )


# ---- grant index (elevate.grants.v1) ----


def _apply_snapshot(row: GrantRow, snapshot: RequestSnapshot) -> None:
    row.request_id = str(snapshot.request_id)
    row.user_name = snapshot.requester.user_name
    row.user_id = snapshot.requester.user_id
    row.user_email = snapshot.requester.email
    row.account_id = snapshot.account_id
    row.account_name = snapshot.account_name
    row.permission_set_name = snapshot.permission_set_name
    row.permission_set_arn = snapshot.permission_set_arn
    row.scheduled_start = snapshot.start
    row.scheduled_end = snapshot.end
    row.justification = snapshot.justification
    row.ticket = snapshot.ticket
    row.approvers = list(snapshot.approvers)
    row.break_glass = snapshot.break_glass


async def _grant_row(session: AsyncSession, grant_id: str, snapshot: RequestSnapshot) -> GrantRow:
    row = await session.get(GrantRow, grant_id)
    if row is None:
        row = GrantRow(grant_id=grant_id)
        session.add(row)
    _apply_snapshot(row, snapshot)
    return row


async def record_grant_event(
    session: AsyncSession,
    *,
    event: Event,
    event_uid: str,
    outbox: Outbox,
    config: CorrelationConfig,
    now: datetime,
) -> None:
    """Index a grants-topic event; emit 3005 on activation/end; re-check waiting records."""
    account: str | None = None
    if isinstance(event, GrantScheduled | GrantFailed):
        await _grant_row(session, str(event.grant_id), event.snapshot)
        account = event.snapshot.account_id
    elif isinstance(event, GrantActivated):
        row = await _grant_row(session, str(event.grant_id), event.snapshot)
        first = row.activated_at is None
        row.activated_at = event.activated_at
        if first:
            await _emit_user_access(
                session, outbox, row, ocsf.ASSIGN, event.activated_at, event_uid
            )
        account = row.account_id
    elif isinstance(event, GrantEnded):
        row = await _grant_row(session, str(event.grant_id), event.snapshot)
        first = row.ended_at is None
        row.ended_at = event.ended_at
        row.end_reason = event.reason
        if first and row.activated_at is not None:
            await _emit_user_access(
                session, outbox, row, ocsf.REVOKE, event.ended_at, event_uid, event.reason
            )
        account = row.account_id
    elif isinstance(event, StandingAssignmentRecorded) and event.principal_type == "USER":
        key = (event.account_id, event.permission_set_arn, event.principal_id)
        standing = await session.get(StandingRow, key)
        if standing is None:
            standing = StandingRow(
                account_id=event.account_id,
                permission_set_arn=event.permission_set_arn,
                principal_id=event.principal_id,
            )
            session.add(standing)
        standing.permission_set_name = event.permission_set_name
        standing.user_name = event.user_name
        standing.source = event.source
        account = event.account_id
    elif isinstance(event, StandingAssignmentDropped):
        # It no longer backs the assignment: activity in it is no longer covered by it.
        key = (event.account_id, event.permission_set_arn, event.principal_id)
        dropped = await session.get(StandingRow, key)
        if dropped is not None:
            await session.delete(dropped)
    if account is not None:
        await session.flush()
        await recheck_pending(session, account_id=account, outbox=outbox, config=config, now=now)


async def _emit_user_access(
    session: AsyncSession,
    outbox: Outbox,
    row: GrantRow,
    activity: int,
    at: datetime,
    event_uid: str,
    reason: str | None = None,
) -> None:
    document = ocsf.user_access(
        window_of(row),
        activity=activity,
        at=at,
        event_uid=event_uid,
        permission_set_arn=row.permission_set_arn,
        account_name=row.account_name,
        reason=reason,
        user_email=row.user_email,
    )
    await _publish(session, outbox, document, key=row.request_id, outcome="grant", now=None)


# ---- correlation of CloudTrail records ----


async def candidates(
    session: AsyncSession, *, record: TrailRecord, grace: timedelta
) -> tuple[list[GrantWindow], list[StandingAccess]]:
    """Grants whose window (plus grace) contains the record's time, and standing access,
    for the record's account and permission set. Bounded by time so that the cost per
    record does not grow with the years of grants an account accumulates."""
    if record.account_id is None or record.permission_set is None:
        return [], []
    grant_rows = (
        await session.execute(
            select(GrantRow).where(
                GrantRow.account_id == record.account_id,
                GrantRow.permission_set_name == record.permission_set,
                GrantRow.activated_at.is_not(None),
                GrantRow.activated_at <= record.event_time,
                func.coalesce(GrantRow.ended_at, GrantRow.scheduled_end)
                >= record.event_time - grace,
            )
        )
    ).scalars()
    standing_rows = (
        await session.execute(
            select(StandingRow).where(
                StandingRow.account_id == record.account_id,
                or_(
                    StandingRow.permission_set_name == record.permission_set,
                    StandingRow.permission_set_name.is_(None),
                ),
            )
        )
    ).scalars()
    standing = [
        StandingAccess(
            account_id=s.account_id,
            permission_set_name=s.permission_set_name or "",
            user_id=s.principal_id,
            user_name=s.user_name,
        )
        for s in standing_rows
    ]
    return [window_of(r) for r in grant_rows], standing


async def _correlate(
    session: AsyncSession, record: TrailRecord, config: CorrelationConfig
) -> Correlation:
    grants, standing = await candidates(session, record=record, grace=config.grace)
    return correlate(
        record,
        grants,
        standing,
        grace=config.grace,
        managed_permission_sets=config.managed,
        managed_pairs=config.scope.pairs if config.scope is not None else None,
    )


def parse(data: Mapping[str, Any]) -> TrailRecord:
    try:
        return parse_record(data)
    except RecordError as exc:
        raise UnreadableRecordError(str(exc)) from None


async def handle_record(
    session: AsyncSession,
    *,
    data: Mapping[str, Any],
    outbox: Outbox,
    config: CorrelationConfig,
    now: datetime,
) -> Outcome | None:
    """Correlate one CloudTrail record and queue its OCSF record; None when it waits."""
    record = parse(data)
    RECORDS_IN.labels("kafka").inc()
    correlation = await _correlate(session, record, config)
    if correlation.outcome is Outcome.UNCOVERED and config.wait > timedelta(0):
        if await session.get(PendingRecord, record.event_id) is None:
            deadline = now + config.wait
            session.add(
                PendingRecord(
                    event_id=record.event_id,
                    account_id=record.account_id or "",
                    record=dict(record.raw),
                    received_at=now,
                    deadline=deadline,
                )
            )
            await schedule(
                session,
                kind=PENDING_TIMER,
                key=record.event_id,
                due_at=deadline,
                payload={"event_id": record.event_id},
            )
        CORRELATED.labels("waiting").inc()
        return None
    await emit_activity(
        session, outbox=outbox, record=record, correlation=correlation, config=config, now=now
    )
    return correlation.outcome


async def emit_activity(
    session: AsyncSession,
    *,
    outbox: Outbox,
    record: TrailRecord,
    correlation: Correlation,
    config: CorrelationConfig,
    now: datetime,
) -> None:
    CORRELATED.labels(correlation.outcome.value).inc()
    if correlation.outcome is Outcome.UNMANAGED:
        return  # not an Elevate-managed role: the SIEM has CloudTrail itself
    grant = correlation.grant
    document = ocsf.api_activity(
        record,
        correlation,
        grace_until=grant.until(config.grace) if grant else None,
        processed_at=now,
    )
    key = grant.request_id if grant else (record.account_id or "")
    await _publish(session, outbox, document, key=key, outcome=correlation.outcome.value, now=now)
    LAG.labels("audit").observe(max(0.0, (now - record.event_time).total_seconds()))


async def _publish(
    session: AsyncSession,
    outbox: Outbox,
    document: dict[str, Any],
    *,
    key: str,
    outcome: str,
    now: datetime | None,
) -> None:
    class_uid = str(document["class_uid"])
    headers = [
        ("content-type", "application/json"),
        ("ocsf_version", ocsf.OCSF_VERSION),
        ("ocsf_class_uid", class_uid),
        ("elevate_outcome", outcome),
    ]
    correlation_uid = document["metadata"].get("correlation_uid")
    if correlation_uid:
        headers.append(("elevate_request_id", str(correlation_uid)))
    await outbox.add_raw(
        session, topic=Topics.AUDIT, key=key, value=ocsf.encode(document), headers=headers
    )
    RECORDS_OUT.labels(Topics.AUDIT.value, class_uid).inc()


async def fire_pending(
    session: AsyncSession,
    *,
    event_id: str,
    outbox: Outbox,
    config: CorrelationConfig,
    now: datetime,
) -> None:
    """The wait is over: correlate once more, then emit — as uncovered if still so."""
    pending = await session.get(PendingRecord, event_id)
    if pending is None:
        return  # a grant event covered it meanwhile
    record = parse(pending.record)
    correlation = await _correlate(session, record, config)
    await emit_activity(
        session, outbox=outbox, record=record, correlation=correlation, config=config, now=now
    )
    await session.delete(pending)


async def recheck_pending(
    session: AsyncSession,
    *,
    account_id: str,
    outbox: Outbox,
    config: CorrelationConfig,
    now: datetime,
) -> int:
    """Emit the waiting records of `account_id` that the grant index now covers."""
    rows = (
        (await session.execute(select(PendingRecord).where(PendingRecord.account_id == account_id)))
        .scalars()
        .all()
    )
    emitted = 0
    for pending in rows:
        record = parse(pending.record)
        correlation = await _correlate(session, record, config)
        if correlation.outcome is Outcome.UNCOVERED:
            continue
        await emit_activity(
            session, outbox=outbox, record=record, correlation=correlation, config=config, now=now
        )
        await session.delete(pending)
        await cancel(session, kind=PENDING_TIMER, key=pending.event_id)
        emitted += 1
    return emitted
