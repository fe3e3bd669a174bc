"""request-api's persistence: each request's event log, the row and timeline folded from
it (domain.fold), and the queries the routes need.

Every write of a request — the consumer folding an event in, a user's submit, cancel,
decision or revoke — goes through `record`, under one per-request lock, so the live model
is always the fold of the events it has, and a rebuild from the topics equals it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from elevate_core.db import insert_for
from elevate_core.events.base import event_class_for
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import DecisionSubmitted
from elevate_core.notify import mark
from sqlalchemy import JSON, Row, Select, String, and_, cast, delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api import domain
from elevate_request_api.domain import Logged, Status, View
from elevate_request_api.models import (
    AccessRequest,
    ActivityRecord,
    RequestEvent,
    TimelineEntry,
    UncoveredActivity,
)

STATUS_CHANNEL = "elevate_request_status"


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


async def lock(session: AsyncSession, request_id: uuid.UUID) -> AccessRequest | None:
    """Serialise every writer of one request (also before its row exists), then lock and
    return the row. SQLite already serialises writers (BEGIN IMMEDIATE)."""
    if _dialect(session) == "postgresql":
        key = int.from_bytes(request_id.bytes[:8], "big", signed=True)
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    return (
        await session.execute(
            select(AccessRequest).where(AccessRequest.id == request_id).with_for_update()
        )
    ).scalar_one_or_none()


async def record(session: AsyncSession, envelope: Envelope) -> AccessRequest | None:
    """Keep a consumed event in its request's log and fold it in. Returns the request's
    row, or None while its request is not known yet (the event waits in the log)."""
    request_id = domain.request_id_of(envelope.event())
    if not isinstance(request_id, uuid.UUID):
        return None  # drift and standing-assignment events concern no request
    await lock(session, request_id)
    return await fold_in(session, envelope, request_id)


async def fold_in(
    session: AsyncSession, envelope: Envelope, request_id: uuid.UUID
) -> AccessRequest | None:
    """`record` for a caller that already holds the request's `lock` (the API's writes).

    An event the log already has changes nothing — the fold is a function of the set of
    events — so it is not folded again: the API's own events, consumed back from Kafka,
    cost one insert that does nothing."""
    result = await session.execute(
        insert_for(session, RequestEvent)
        .values(
            event_id=envelope.id,
            request_id=request_id,
            type=envelope.type,
            at=envelope.time,
            data=envelope.data,
        )
        .on_conflict_do_nothing()
    )
    if not getattr(result, "rowcount", 1):
        return await session.get(AccessRequest, request_id)
    return await refold(session, request_id)


async def refold(session: AsyncSession, request_id: uuid.UUID) -> AccessRequest | None:
    """Recompute the request's row and timeline from its log (caller holds `lock`)."""
    rows = (
        await session.execute(select(RequestEvent).where(RequestEvent.request_id == request_id))
    ).scalars()
    view = domain.fold(
        Logged(r.event_id, r.at, event_class_for(r.type).model_validate(r.data)) for r in rows
    )
    if view is None:
        return None
    row = await session.get(AccessRequest, request_id)
    if row is None:
        row = AccessRequest(id=request_id)
        session.add(row)
    _write_row(row, view)
    await session.flush()
    await session.execute(delete(TimelineEntry).where(TimelineEntry.request_id == request_id))
    session.add_all(
        TimelineEntry(
            request_id=request_id,
            event_id=item.event_id,
            at=item.at,
            actor=item.actor,
            action=item.action,
            comment=item.comment,
            status=item.status,
            detail={},
        )
        for item in view.timeline
    )
    await mark(session, STATUS_CHANNEL, str(request_id))
    return row


def _write_row(row: AccessRequest, view: View) -> None:
    d = view.details
    row.requester_user_name = d.requester.user_name
    row.requester_user_id = d.requester.user_id
    row.requester_email = d.requester.email
    row.account_id = d.account_id
    row.account_name = d.account_name
    row.ou_path = view.ou_path
    row.permission_set_name = d.permission_set_name
    row.permission_set_arn = d.permission_set_arn
    row.start = d.start
    row.end = d.end
    row.justification = d.justification
    row.ticket = d.ticket
    row.matched_rule = d.matched_rule
    row.approval_rule = view.approval_rule
    row.approver_groups = list(view.approver_groups)
    row.required_approvals = view.required_approvals
    row.policy_version = d.policy_version
    row.break_glass = d.break_glass
    # A review recorded on the row (done) is never taken back by a replayed event.
    row.review = domain.merge_review(row.review, view.review)
    row.status = view.status
    row.approvers = sorted(view.approvers)
    row.approver_ids = sorted(view.approver_ids)
    row.sessions_valid_until = view.sessions_valid_until
    row.sessions_cut = view.sessions_cut
    row.created_at = view.created_at
    row.updated_at = view.updated_at


# ---- queries ------------------------------------------------------------------------


async def timeline(session: AsyncSession, request_id: uuid.UUID) -> Sequence[TimelineEntry]:
    return (
        (
            await session.execute(
                select(TimelineEntry)
                .where(TimelineEntry.request_id == request_id)
                .order_by(TimelineEntry.id)
            )
        )
        .scalars()
        .all()
    )


async def activity(session: AsyncSession, request_id: uuid.UUID) -> Sequence[ActivityRecord]:
    return (
        (
            await session.execute(
                select(ActivityRecord)
                .where(ActivityRecord.request_id == request_id)
                .order_by(ActivityRecord.at, ActivityRecord.id)
            )
        )
        .scalars()
        .all()
    )


class HistoryFilters(TypedDict, total=False):
    """The filters of the request history (each narrows it; names are exact)."""

    requester_user_id: str | None
    requester: str | None
    account_id: str | None
    permission_set: str | None
    status: Status | None
    created_after: datetime | None
    created_before: datetime | None
    break_glass: bool | None
    review: str | None


def _history(
    what: list[Any],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    filters: HistoryFilters,
) -> Select[Any]:
    """The history's query: filtered, newest first, `limit + 1` after the keyset `after`."""
    status = filters.get("status")
    exact = (
        (AccessRequest.requester_user_id, filters.get("requester_user_id")),
        (AccessRequest.requester_user_name, filters.get("requester")),
        (AccessRequest.account_id, filters.get("account_id")),
        (AccessRequest.permission_set_name, filters.get("permission_set")),
        (AccessRequest.status, status.value if status is not None else None),
        (AccessRequest.break_glass, filters.get("break_glass")),
        (AccessRequest.review, filters.get("review")),
    )
    stmt = select(*what).where(*(column == value for column, value in exact if value is not None))
    created_after, created_before = filters.get("created_after"), filters.get("created_before")
    if created_after is not None:
        stmt = stmt.where(AccessRequest.created_at >= created_after)
    if created_before is not None:
        stmt = stmt.where(AccessRequest.created_at < created_before)
    if after is not None:
        at, rid = after
        stmt = stmt.where(
            or_(
                AccessRequest.created_at < at,
                and_(AccessRequest.created_at == at, AccessRequest.id < rid),
            )
        )
    stmt = stmt.order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc())
    return stmt.limit(limit + 1)


async def page(
    session: AsyncSession,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    **filters: Unpack[HistoryFilters],
) -> Sequence[AccessRequest]:
    """Requests newest first, `limit + 1` of them (one more says there is a next page)."""
    result = await session.execute(_history([AccessRequest], after, limit, filters))
    found: Sequence[AccessRequest] = result.scalars().all()
    return found


async def page_rows(
    session: AsyncSession,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    **filters: Unpack[HistoryFilters],
) -> Sequence[Row[Any]]:
    """`page` as plain rows of every column (no ORM objects): an export's batches, several
    times cheaper to load. JSON columns come as their JSON text (decoding them cost more
    than the rest of the row)."""
    columns = [
        cast(c, String).label(c.name) if isinstance(c.type, JSON) else c
        for c in AccessRequest.__table__.columns
    ]
    found: Sequence[Row[Any]] = (
        await session.execute(_history(columns, after, limit, filters))
    ).all()
    return found


async def uncovered_near(
    session: AsyncSession, row: AccessRequest, *, margin: timedelta, limit: int = 200
) -> Sequence[UncoveredActivity]:
    """Uncovered actions by the request's requester in its account and permission set's
    role from `margin` before its start to `margin` after its end (by user id where
    CloudTrail names one, else by the role session's name)."""
    who = or_(
        UncoveredActivity.user_id == row.requester_user_id,
        and_(
            UncoveredActivity.user_id.is_(None),
            UncoveredActivity.session_name == row.requester_user_name,
        ),
    )
    query = (
        select(UncoveredActivity)
        .where(
            UncoveredActivity.account_id == row.account_id,
            UncoveredActivity.permission_set == row.permission_set_name,
            who,
            UncoveredActivity.at >= row.start - margin,
            UncoveredActivity.at <= row.end + margin,
        )
        .order_by(UncoveredActivity.at, UncoveredActivity.id)
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()


async def in_status(session: AsyncSession, *statuses: Status) -> Sequence[AccessRequest]:
    """Every request in one of `statuses`, oldest first (the open ones: a bounded set)."""
    query = (
        select(AccessRequest)
        .where(AccessRequest.status.in_([s.value for s in statuses]))
        .order_by(AccessRequest.created_at)
    )
    return (await session.execute(query)).scalars().all()


async def decided_by(session: AsyncSession, request_id: uuid.UUID, user_id: str) -> bool:
    """Whether the request's log holds a decision `user_id` submitted (through any path)."""
    rows = (
        await session.execute(
            select(RequestEvent.data).where(
                RequestEvent.request_id == request_id,
                RequestEvent.type == DecisionSubmitted.ce_type,
            )
        )
    ).scalars()
    return any((data.get("approver") or {}).get("user_id") == user_id for data in rows)
