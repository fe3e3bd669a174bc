"""audit-ingest's state changes, each inside the caller's transaction: correlation of
records (with waiting for a grant not yet known) and the OCSF outbox rows. The grant index
the correlation reads is kept by `grant_index`."""

from __future__ import annotations

import logging
from collections import Counter as TallyCounter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from elevate_core.errors import ElevateError
from elevate_core.events.topics import Topics
from elevate_core.kafka.transactional import Output
from elevate_core.outbox import Outbox
from elevate_core.timers import cancel, schedule
from prometheus_client import Counter, Histogram
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest import lookups, ocsf
from elevate_audit_ingest.domain import (
    Conflict,
    Correlation,
    Outcome,
    RecordError,
    TrailRecord,
    parse_record,
)
from elevate_audit_ingest.lookups import Candidates, Received
from elevate_audit_ingest.models import PendingRecord

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
    "eventTime to publish (cloudtrail: Kafka ack, per record; audit: queued, per batch its "
    "oldest record)",
    ["stage"],
    buckets=(1, 5, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21600),
)
_AUDIT_LAG = LAG.labels("audit")  # per record: the child looked up once
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


class OversizedRecordError(ElevateError):
    """An OCSF record Kafka would refuse (over `MAX_OUTPUT_BYTES`): refused here, before the
    batch's transaction, so that its CloudTrail record is dead-lettered and the rest goes on
    (a refusal inside the transaction would fail the batch again at every attempt)."""

    retryable = False


# Under the broker's default message.max.bytes (1 MiB) with room for headers and batch.
MAX_OUTPUT_BYTES = 900_000


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


class Emission(NamedTuple):  # a tuple: one per record
    """A record to emit, with what its OCSF record says about it."""

    record: TrailRecord
    correlation: Correlation
    conflicts: list[Conflict]


def parse(data: Mapping[str, Any], digest: str | None = None) -> TrailRecord:
    try:
        return parse_record(data, digest)
    except RecordError as exc:
        raise UnreadableRecordError(str(exc)) from None


def _correlate(found: Candidates, record: TrailRecord, config: CorrelationConfig) -> Correlation:
    return found.correlate(
        record,
        grace=config.grace,
        managed=config.managed,
        managed_pairs=config.scope.pairs if config.scope is not None else None,
    )


async def correlate_batch(
    session: AsyncSession, batch: Sequence[Received], *, config: CorrelationConfig, now: datetime
) -> list[Emission]:
    """Claim the batch's records, correlate the ones not seen before and park those that
    wait for a grant: the records decided now, in order (a few statements per batch).
    Unmanaged ones are among them, and emit nothing: the SIEM has CloudTrail itself."""
    claims = await lookups.claim(session, batch, now)
    fresh = [r for r in batch if claims.is_ours(r)]
    found = await lookups.candidates(session, [r.record for r in fresh], grace=config.grace)
    emissions: list[Emission] = []
    outcomes: TallyCounter[str] = TallyCounter()
    for received in fresh:
        record = received.record
        correlation = _correlate(found, record, config)
        if correlation.outcome in _WAITING and config.wait > timedelta(0):
            await _wait(session, record, now + config.wait, now)
            outcomes["waiting"] += 1
            continue
        outcomes[correlation.outcome.value] += 1
        unmanaged = correlation.outcome is Outcome.UNMANAGED  # emitted as nothing
        conflicts = [] if unmanaged else claims.conflicts(record, received.position)
        emissions.append(Emission(record, correlation, conflicts))
    RECORDS_IN.labels("kafka").inc(len(fresh))
    for outcome, n in outcomes.items():
        CORRELATED.labels(outcome).inc(n)
    return emissions


def render(emission: Emission, *, config: CorrelationConfig, now: datetime) -> tuple[str, Any]:
    """(Kafka key, OCSF document) of an emission: keyed by request, else by account."""
    record, correlation, conflicts = emission.record, emission.correlation, emission.conflicts
    grant = correlation.grant
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
    return (grant.request_id if grant else (record.account_id or "")), document


def headers_for(document: Mapping[str, Any], outcome: str) -> tuple[tuple[str, str], ...]:
    return _headers(document["class_uid"], outcome, document["metadata"].get("correlation_uid"))


@lru_cache(maxsize=4096)  # a few outcomes times the grants active at once
def _headers(
    class_uid: int, outcome: str, correlation_uid: str | None
) -> tuple[tuple[str, str], ...]:
    headers = [
        ("content-type", "application/json"),
        ("ocsf_version", ocsf.OCSF_VERSION),
        ("ocsf_class_uid", str(class_uid)),
        ("elevate_outcome", outcome),
    ]
    if correlation_uid:
        headers.append(("elevate_request_id", str(correlation_uid)))
    return tuple(headers)


@lru_cache(maxsize=4096)
def _encoded(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v.encode()) for k, v in headers)


async def handle_batch(
    session: AsyncSession,
    batch: Sequence[Received],
    *,
    config: CorrelationConfig,
    topic: str,
    now: datetime,
) -> list[Output]:
    """The CloudTrail consumer's batch: the OCSF records to produce in its Kafka
    transaction (on `topic`, the prefixed audit topic)."""
    outputs: list[Output] = []
    emissions = await correlate_batch(session, batch, config=config, now=now)
    for emission in emissions:
        if emission.correlation.outcome is Outcome.UNMANAGED:
            continue
        key, document = render(emission, config=config, now=now)
        headers = _encoded(headers_for(document, emission.correlation.outcome.value))
        value = ocsf.encode(document)
        if len(value) > MAX_OUTPUT_BYTES:
            raise OversizedRecordError(
                f"eventID {emission.record.event_id}: OCSF record of {len(value)} bytes"
            )
        outputs.append(Output(topic, key.encode(), value, headers))
    if outputs:
        RECORDS_OUT.labels(Topics.AUDIT.value, str(ocsf.API_ACTIVITY)).inc(len(outputs))
    if emissions:  # per batch, its oldest record: a histogram observation costs ~1 µs
        oldest = min(e.record.event_time for e in emissions)
        _AUDIT_LAG.observe(max(0.0, (now - oldest).total_seconds()))
    return outputs


async def handle_record(
    session: AsyncSession,
    *,
    data: Mapping[str, Any],
    outbox: Outbox,
    config: CorrelationConfig,
    now: datetime,
    position: str = "direct",
) -> Outcome | None:
    """One record through the same steps, its OCSF record queued in the outbox; the
    outcome, or None when it waits (or was already claimed at another position)."""
    received = Received(parse(data), position)
    emissions = await correlate_batch(session, [received], config=config, now=now)
    for emission in emissions:
        await emit(session, outbox=outbox, emission=emission, config=config, now=now)
    return emissions[0].correlation.outcome if emissions else None


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


async def emit(
    session: AsyncSession,
    *,
    outbox: Outbox,
    emission: Emission,
    config: CorrelationConfig,
    now: datetime,
) -> None:
    """Queue an emission's OCSF record in the outbox (timers and grant events: the rare
    paths; the CloudTrail consumer produces in its Kafka transaction instead)."""
    if emission.correlation.outcome is Outcome.UNMANAGED:
        return
    key, document = render(emission, config=config, now=now)
    await publish(
        session, outbox, document, key=key, outcome=emission.correlation.outcome.value, now=now
    )


async def publish(
    session: AsyncSession,
    outbox: Outbox,
    document: dict[str, Any],
    *,
    key: str,
    outcome: str,
    now: datetime | None,
) -> None:
    await outbox.add_raw(
        session,
        topic=Topics.AUDIT,
        key=key,
        value=ocsf.encode(document),
        headers=headers_for(document, outcome),
    )
    RECORDS_OUT.labels(Topics.AUDIT.value, str(document["class_uid"])).inc()


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
    found = await lookups.candidates(session, [record], grace=config.grace)
    correlation = _correlate(found, record, config)
    conflicts = (await lookups.known(session, [record])).conflicts(record)
    emission = Emission(record, correlation, conflicts)
    CORRELATED.labels(correlation.outcome.value).inc()
    await emit(session, outbox=outbox, emission=emission, config=config, now=now)
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
    records = [parse(pending.record) for pending in rows]
    found = await lookups.candidates(session, records, grace=config.grace)
    claims = await lookups.known(session, records)
    emitted = 0
    for pending, record in zip(rows, records, strict=True):
        correlation = _correlate(found, record, config)
        if correlation.outcome in _WAITING:
            continue
        CORRELATED.labels(correlation.outcome.value).inc()
        emission = Emission(record, correlation, claims.conflicts(record))
        await emit(session, outbox=outbox, emission=emission, config=config, now=now)
        await session.delete(pending)
        await cancel(session, kind=PENDING_TIMER, key=pending.event_id)
        emitted += 1
    return emitted
