"""audit-ingest's state changes, each inside the caller's transaction: correlation of
records (with waiting for a grant not yet known) and the OCSF outbox rows. The grant index
the correlation reads is kept by `grant_index`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from elevate_core.errors import ElevateError
from elevate_core.events.topics import Topics
from elevate_core.outbox import Outbox
from elevate_core.timers import cancel, schedule
from prometheus_client import Counter, Histogram
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest import ocsf
from elevate_audit_ingest.domain import (
    KEY_EVENT_ID,
    Conflict,
    Correlation,
    GrantWindow,
    Outcome,
    RecordError,
    StandingAccess,
    TrailRecord,
    correlate,
    parse_record,
)
from elevate_audit_ingest.models import GrantRow, PendingRecord, RecordDigest, StandingRow

log = logging.getLogger(__name__)
PENDING_TIMER = "audit.pending_record"
# Outcomes a grant not yet known could still turn into GRANT: they wait before being flagged.
_WAITING = {Outcome.UNCOVERED, Outcome.OUTLIVED}

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
CONFLICTS = Counter(
    "elevate_audit_event_id_conflicts_total",
    "Records emitted while another record with the same eventID but other content is known",
)
QUARANTINED = Counter("elevate_audit_quarantined_files_total", "CloudTrail files quarantined")
# A security signal: every refusal counts, also of an object already quarantined.
REFUSED = Counter(
    "elevate_audit_sources_refused_total",
    "Objects a notice named outside ELEVATE_CLOUDTRAIL_SOURCES (never fetched)",
    ["reason"],
)


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


# ---- correlation of CloudTrail records ----


async def candidates(
    session: AsyncSession, *, record: TrailRecord, grace: timedelta
) -> tuple[list[GrantWindow], list[StandingAccess]]:
    """Grants whose window (plus grace) contains the record's time or its session's start,
    and standing access, for the record's account and permission set. Bounded by time so
    that the cost per record does not grow with the years of grants an account accumulates."""
    if record.account_id is None or record.permission_set is None:
        return [], []
    end = func.coalesce(GrantRow.ended_at, GrantRow.scheduled_end)
    ends: list[ColumnElement[bool]] = [end >= record.event_time - grace]
    if record.session_started is not None:  # a session begun in a grant, used long after
        ends.append(end >= record.session_started)
    grant_rows = (
        await session.execute(
            select(GrantRow).where(
                GrantRow.account_id == record.account_id,
                GrantRow.permission_set_name == record.permission_set,
                GrantRow.activated_at.is_not(None),
                GrantRow.activated_at <= record.event_time,
                or_(*ends),
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
    await _remember_content(session, record, now)
    correlation = await _correlate(session, record, config)
    if correlation.outcome in _WAITING and config.wait > timedelta(0):
        await _wait(session, record, now + config.wait, now)
        CORRELATED.labels("waiting").inc()
        return None
    await emit_activity(
        session, outbox=outbox, record=record, correlation=correlation, config=config, now=now
    )
    return correlation.outcome


async def _wait(
    session: AsyncSession, record: TrailRecord, deadline: datetime, now: datetime
) -> None:
    """Park the record (keyed by content, so one reusing its eventID waits beside it)."""
    if await session.get(PendingRecord, record.key) is not None:
        return
    session.add(
        PendingRecord(
            event_id=record.key,
            account_id=record.account_id or "",
            record=dict(record.raw),
            received_at=now,
            deadline=deadline,
        )
    )
    await schedule(
        session,
        kind=PENDING_TIMER,
        key=record.key,
        due_at=deadline,
        payload={"event_id": record.key},
    )


def _delivery(record: TrailRecord) -> str | None:
    return f"s3://{record.delivery[0]}/{record.delivery[1]}"[:1400] if record.delivery else None


async def _remember_content(session: AsyncSession, record: TrailRecord, now: datetime) -> None:
    key = (record.event_id[:KEY_EVENT_ID], record.digest)
    if await session.get(RecordDigest, key) is None:
        session.add(
            RecordDigest(event_id=key[0], digest=key[1], delivery=_delivery(record), first_seen=now)
        )


async def conflicts_of(session: AsyncSession, record: TrailRecord) -> list[Conflict]:
    """The other contents seen under the record's eventID (a forged or altered copy)."""
    rows = (
        await session.execute(
            select(RecordDigest)
            .where(
                RecordDigest.event_id == record.event_id[:KEY_EVENT_ID],
                RecordDigest.digest != record.digest,
            )
            .order_by(RecordDigest.first_seen, RecordDigest.digest)
        )
    ).scalars()
    return [Conflict(digest=r.digest, delivery=r.delivery) for r in rows]


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
    conflicts = await conflicts_of(session, record)
    document = ocsf.api_activity(
        record,
        correlation,
        grace_until=grant.until(config.grace) if grant else None,
        processed_at=now,
        conflicts=conflicts,
    )
    if conflicts:
        CONFLICTS.inc()
        log.error(
            "eventID %s: %d other record(s) with this eventID and other content",
            record.event_id,
            len(conflicts),
        )
    key = grant.request_id if grant else (record.account_id or "")
    await publish(session, outbox, document, key=key, outcome=correlation.outcome.value, now=now)
    LAG.labels("audit").observe(max(0.0, (now - record.event_time).total_seconds()))


async def publish(
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
        if correlation.outcome in _WAITING:
            continue
        await emit_activity(
            session, outbox=outbox, record=record, correlation=correlation, config=config, now=now
        )
        await session.delete(pending)
        await cancel(session, kind=PENDING_TIMER, key=pending.event_id)
        emitted += 1
    return emitted
