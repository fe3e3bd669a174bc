"""The grant index, from the grants topic (elevate.grants.v1): which grant and standing
access covers which account and permission set, and when. Activation and end also emit
OCSF User Access Management (3005) records; every change re-checks the records waiting
for a grant in that account."""

from __future__ import annotations

from datetime import datetime

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
from elevate_core.outbox import Outbox
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest import ocsf
from elevate_audit_ingest.lookups import window_of
from elevate_audit_ingest.models import GrantRow, StandingRow
from elevate_audit_ingest.service import CorrelationConfig, publish, recheck_pending


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
    account = await _index(session, event, event_uid, outbox)
    if account is not None:
        await session.flush()
        await recheck_pending(session, account_id=account, outbox=outbox, config=config, now=now)


async def _index(session: AsyncSession, event: Event, event_uid: str, outbox: Outbox) -> str | None:
    """Apply `event` to the grant and standing index: the account whose waiting records
    may now be covered, or None when nothing new can cover any."""
    if isinstance(event, GrantScheduled | GrantFailed):
        await _grant_row(session, str(event.grant_id), event.snapshot)
        return event.snapshot.account_id
    if isinstance(event, GrantActivated):
        return await _grant_activated(session, event, event_uid, outbox)
    if isinstance(event, GrantEnded):
        return await _grant_ended(session, event, event_uid, outbox)
    if isinstance(event, StandingAssignmentRecorded) and event.principal_type == "USER":
        return await _standing_recorded(session, event)
    if isinstance(event, StandingAssignmentDropped):
        # It no longer backs the assignment: activity in it is no longer covered by it.
        key = (event.account_id, event.permission_set_arn, event.principal_id)
        dropped = await session.get(StandingRow, key)
        if dropped is not None:
            await session.delete(dropped)
    return None


async def _grant_activated(
    session: AsyncSession, event: GrantActivated, event_uid: str, outbox: Outbox
) -> str:
    row = await _grant_row(session, str(event.grant_id), event.snapshot)
    first = row.activated_at is None
    row.activated_at = event.activated_at
    if first:  # a redelivered activation must not assign twice in the SIEM
        await _emit_user_access(session, outbox, row, ocsf.ASSIGN, event.activated_at, event_uid)
    return row.account_id


async def _grant_ended(
    session: AsyncSession, event: GrantEnded, event_uid: str, outbox: Outbox
) -> str:
    row = await _grant_row(session, str(event.grant_id), event.snapshot)
    first = row.ended_at is None
    row.ended_at = event.ended_at
    row.end_reason = event.reason
    # a grant that never became active assigned nothing, so there is nothing to revoke
    if first and row.activated_at is not None:
        await _emit_user_access(
            session, outbox, row, ocsf.REVOKE, event.ended_at, event_uid, event.reason
        )
    return row.account_id


async def _standing_recorded(session: AsyncSession, event: StandingAssignmentRecorded) -> str:
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
    return event.account_id


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
    await publish(session, outbox, document, key=row.request_id, outcome="grant", now=None)
