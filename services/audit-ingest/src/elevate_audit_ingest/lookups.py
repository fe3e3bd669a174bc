"""What correlating a batch of CloudTrail records reads and writes, set-based: one statement
claims every record's content, one reads what is known under their eventIDs, one reads the
candidate grants and one the standing access, whatever the batch's size. What remains per
record is pure work (domain.correlate, the OCSF mapping).

A record's claim is where it was first read (`topic:partition:offset`): a record read again
at the position that claimed it is the same delivery retried after a crash between the
database commit and the Kafka transaction's (emit it again); at any other position it is a
duplicate (a file read twice, a replayed producer) and is dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from elevate_core.db import UTCDateTime, insert_for
from sqlalchemy import bindparam, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest.domain import (
    KEY_EVENT_ID,
    Conflict,
    Correlation,
    GrantWindow,
    StandingAccess,
    TrailRecord,
    correlate,
)
from elevate_audit_ingest.models import GrantRow, RecordDigest, StandingRow

_DIGESTS = RecordDigest.__table__


class Received(NamedTuple):  # a tuple: one per record
    """A parsed record and the position it was read at."""

    record: TrailRecord
    position: str


# One known content: (digest, delivery, first_seen, claimed_by); plain tuples, thousands
# per batch.
_Known = tuple[str, str | None, datetime, str | None]


def delivery_of(record: TrailRecord) -> str | None:
    return f"s3://{record.delivery[0]}/{record.delivery[1]}"[:1400] if record.delivery else None


def _event_key(record: TrailRecord) -> str:
    return record.event_id[:KEY_EVENT_ID]


class Claims:
    """The contents known under a batch's eventIDs, and which position claimed each: the
    rows known before the batch, then the batch's own records in order (the first position
    of a content new to the table claims it), so each record is judged as if the batch ran
    one by one."""

    def __init__(
        self,
        rows: Iterable[Any],
        batch: Sequence[Received] = (),
        deliveries: Sequence[str | None] = (),
        now: datetime | None = None,
        inserted: Iterable[str] = (),
    ) -> None:
        """`rows`: what was known before the batch; `inserted`: the positions whose claim
        the batch's insert made (the database's word, also against a concurrent writer)."""
        by_event: dict[str, list[_Known]] = defaultdict(list)
        ours: set[str] = set(inserted)
        for event_id, digest, delivery, first_seen, claimed_by in rows:
            by_event[event_id].append((digest, delivery, first_seen, claimed_by))
            if claimed_by is not None:
                ours.add(claimed_by)  # claimed by this position before: retried, its own
        batch_positions = {r.position for r in batch}
        self._ours = ours & batch_positions if batch else ours
        if now is not None:
            self._add_newly_claimed(batch, deliveries, now, by_event)
        self._by_event = by_event
        self._order = {r.position: n for n, r in enumerate(batch)}

    def _add_newly_claimed(
        self,
        batch: Sequence[Received],
        deliveries: Sequence[str | None],
        now: datetime,
        by_event: dict[str, list[_Known]],
    ) -> None:
        """The batch's new claims are known to the records after them: needed only under
        an eventID that is known already or that the batch holds more than once."""
        first: dict[str, int] = {}
        shared = {
            event_id
            for n, r in enumerate(batch)
            if first.setdefault(event_id := _event_key(r.record), n) != n or event_id in by_event
        }
        if not shared:
            return
        for received, delivery in zip(batch, deliveries, strict=True):
            record = received.record
            event_id = _event_key(record)
            if event_id in shared and received.position in self._ours:
                by_event[event_id].append((record.digest, delivery, now, received.position))

    def is_ours(self, received: Received) -> bool:
        return received.position in self._ours

    def conflicts(self, record: TrailRecord, position: str | None = None) -> list[Conflict]:
        """The other contents known under the record's eventID before it (a forged or
        altered copy): not those a later record of the same batch brought."""
        known = self._by_event.get(_event_key(record), ())
        if not known or (len(known) == 1 and known[0][0] == record.digest):
            return []  # (nearly always) nothing else known under its eventID
        order = self._order
        mine = order.get(position, -1) if position is not None else len(order)
        others = [
            k for k in known if k[0] != record.digest and not (k[3] in order and order[k[3]] > mine)
        ]
        others.sort(key=lambda k: (k[2], k[0]))
        return [Conflict(digest=k[0], delivery=k[1]) for k in others]


async def known(session: AsyncSession, records: Iterable[TrailRecord]) -> Claims:
    """What is known under the records' eventIDs (no claim: for records already claimed)."""
    return Claims(await _known_rows(session, {_event_key(r) for r in records}))


async def _known_rows(session: AsyncSession, event_ids: set[str]) -> Sequence[Any]:
    if not event_ids:
        return []
    columns = (
        RecordDigest.event_id,
        RecordDigest.digest,
        RecordDigest.delivery,
        RecordDigest.first_seen,
        RecordDigest.claimed_by,
    )
    where = RecordDigest.event_id.in_(sorted(event_ids))  # PostgreSQL's claims: _PG_CLAIM
    return (await session.execute(select(*columns).where(where))).all()


# PostgreSQL: the whole claim in one statement, the batch as four array parameters (no
# per-row statement executions). Its SELECT sees the table as it was before the INSERT:
# it returns the positions the INSERT claimed (kind 'new') and what was known before the
# batch (kind 'known', normally nothing).
_PG_CLAIM = text(
    """
    WITH claimed AS (
      INSERT INTO audit_record_digests (event_id, digest, delivery, first_seen, claimed_by)
      SELECT event_id, digest, delivery, :now, claimed_by FROM unnest(
        CAST(:event_ids AS varchar[]), CAST(:digests AS varchar[]),
        CAST(:deliveries AS varchar[]), CAST(:positions AS varchar[])
      ) AS b(event_id, digest, delivery, claimed_by)
      ON CONFLICT DO NOTHING
      RETURNING claimed_by
    )
    SELECT 'new', NULL, NULL, NULL, NULL, claimed_by FROM claimed
    UNION ALL
    SELECT 'known', d.event_id, d.digest, d.delivery, d.first_seen, d.claimed_by
    FROM audit_record_digests AS d
    WHERE d.event_id = ANY(CAST(:event_ids AS varchar[]))
    """
).bindparams(bindparam("now", type_=UTCDateTime()))


async def claim(session: AsyncSession, batch: Sequence[Received], now: datetime) -> Claims:
    """Claim each record's content for its position unless already claimed, and read
    what was known under the batch's eventIDs before (PostgreSQL: one statement)."""
    if not batch:
        return Claims(())
    event_ids = [_event_key(r.record) for r in batch]
    deliveries = [delivery_of(r.record) for r in batch]
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        params = {
            "event_ids": event_ids,
            "digests": [r.record.digest for r in batch],
            "deliveries": deliveries,
            "positions": [r.position for r in batch],
            "now": now,
        }
        result = (await session.execute(_PG_CLAIM, params)).all()
        inserted = [row[5] for row in result if row[0] == "new"]
        before = [row[1:] for row in result if row[0] == "known"]
        return Claims(before, batch, deliveries, now, inserted)
    known_before = await _known_rows(session, set(event_ids))
    rows = [
        {
            "event_id": event_id,
            "digest": r.record.digest,
            "delivery": delivery,
            "first_seen": now,
            "claimed_by": r.position,
        }
        for event_id, r, delivery in zip(event_ids, batch, deliveries, strict=True)
    ]
    await session.execute(insert_for(session, _DIGESTS).on_conflict_do_nothing(), rows)
    # SQLite: whose claim each content is now, read back after the insert (same transaction)
    owners = [row[4] for row in await _known_rows(session, set(event_ids)) if row[4]]
    return Claims(known_before, batch, deliveries, now, owners)


class Candidates:
    """The grants and standing access the records of a batch may belong to, by account and
    permission set; `domain.correlate` decides among them."""

    def __init__(self, grants: Iterable[GrantWindow], standing: Iterable[StandingAccess]) -> None:
        self._grants: dict[tuple[str, str], list[GrantWindow]] = defaultdict(list)
        for grant in grants:
            self._grants[(grant.account_id, grant.permission_set_name)].append(grant)
        self._standing: dict[str, list[StandingAccess]] = defaultdict(list)
        for access in standing:
            self._standing[access.account_id].append(access)

    def correlate(
        self,
        record: TrailRecord,
        *,
        grace: timedelta,
        managed: frozenset[str] | None,
        managed_pairs: frozenset[tuple[str, str]] | None,
    ) -> Correlation:
        account, permission_set = record.account_id or "", record.permission_set or ""
        standing = [
            s
            for s in self._standing.get(account, ())
            if s.permission_set_name in (permission_set, "")
        ]
        return correlate(
            record,
            self._grants.get((account, permission_set), ()),
            standing,
            grace=grace,
            managed_permission_sets=managed,
            managed_pairs=managed_pairs,
        )


def _earliest(records: Sequence[TrailRecord], grace: timedelta) -> datetime:
    """Grants ending before this cannot cover or be outlived by any record of the batch."""
    return min(
        min(r.event_time - grace, r.session_started or r.event_time - grace) for r in records
    )


async def candidates(
    session: AsyncSession,
    records: Sequence[TrailRecord],
    *,
    grace: timedelta,
) -> Candidates:
    """Grants active by the batch's last record that did not end before its earliest
    relevance, and standing access, for the batch's Identity Center (account, permission
    set) pairs. Bounded by time: the cost does not grow with years of grants."""
    relevant = [r for r in records if r.account_id is not None and r.permission_set is not None]
    if not relevant:
        return Candidates((), ())
    pairs = sorted({(r.account_id or "", r.permission_set or "") for r in relevant})
    end = func.coalesce(GrantRow.ended_at, GrantRow.scheduled_end)
    grant_rows = (
        await session.execute(
            select(GrantRow).where(
                tuple_(GrantRow.account_id, GrantRow.permission_set_name).in_(pairs),
                GrantRow.activated_at.is_not(None),
                GrantRow.activated_at <= max(r.event_time for r in relevant),
                end >= _earliest(relevant, grace),
            )
        )
    ).scalars()
    standing_rows = (
        await session.execute(
            select(StandingRow).where(StandingRow.account_id.in_(sorted({p[0] for p in pairs})))
        )
    ).scalars()
    return Candidates(
        [window_of(row) for row in grant_rows],
        [_standing(row) for row in standing_rows],
    )


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


def _standing(row: StandingRow) -> StandingAccess:
    return StandingAccess(
        account_id=row.account_id,
        permission_set_name=row.permission_set_name or "",
        user_id=row.principal_id,
        user_name=row.user_name,
    )
