"""request-api's reading use cases (keyword-only): the caller's requests a page at a
time, one request with its timeline and activity, what waits for the caller's decision and
the access in force the caller may end. The writing ones are in service.py."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from elevate_core.directory.models import User
from elevate_core.policy.approvals import may_decide
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api import store
from elevate_request_api.deps import ApiState
from elevate_request_api.domain import IN_FORCE, InvalidCursorError, Status
from elevate_request_api.models import (
    AccessRequest,
    ActivityRecord,
    TimelineEntry,
    UncoveredActivity,
)
from elevate_request_api.service import load_visible, may_end, requester_of


def encode_cursor(row: AccessRequest) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, rid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:  # ours carry one: comparing naive to aware would fail
            raise ValueError(at)
        return when.astimezone(UTC), uuid.UUID(rid)
    except (ValueError, OverflowError):
        raise InvalidCursorError("cursor: not a cursor this API returned") from None


async def list_requests(
    *,
    session: AsyncSession,
    user: User,
    status: Status | None,
    account_id: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[AccessRequest], str | None]:
    """A page of the caller's own requests, newest first, and the next page's cursor."""
    rows = await store.page(
        session,
        requester_user_id=user.user_id,
        status=status,
        account_id=account_id,
        created_after=created_after,
        created_before=created_before,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    return page_of(rows, limit)


def page_of(
    rows: Sequence[AccessRequest], limit: int
) -> tuple[Sequence[AccessRequest], str | None]:
    """A page from `store.page`'s `limit + 1` rows, and the next page's cursor (if any)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


async def get_request(
    *, session: AsyncSession, state: ApiState, user: User, request_id: uuid.UUID
) -> tuple[AccessRequest, Sequence[TimelineEntry], Sequence[ActivityRecord]]:
    row = await load_visible(session=session, state=state, user=user, request_id=request_id)
    return row, await store.timeline(session, row.id), await store.activity(session, row.id)


# Uncovered actions this long before a request's start or after its end are shown with it.
UNCOVERED_MARGIN = timedelta(hours=1)


async def uncovered_around(
    *, session: AsyncSession, row: AccessRequest
) -> Sequence[UncoveredActivity]:
    """The requester's uncovered actions in the request's role around its window (the
    caller has been allowed to see `row`)."""
    return await store.uncovered_near(session, row, margin=UNCOVERED_MARGIN)


async def may_decide_on(state: ApiState, user: User, row: AccessRequest) -> bool:
    """Whether `user` may approve or reject `row` now (never their own)."""
    rule = state.access.policy.approval_rules.get(row.approval_rule)
    if rule is None or row.status != Status.PENDING:
        return False
    return bool(may_decide(rule, requester=await requester_of(state, row), decider=user))


async def approvals(*, session: AsyncSession, state: ApiState, user: User) -> list[AccessRequest]:
    """Pending requests the caller may decide (never their own, nor one whose decision
    by them is already recorded: a rule needing several approvals waits for others)."""
    pending = await store.in_status(session, Status.PENDING)
    return [
        row
        for row in pending
        if user.user_id not in (row.approver_ids or ()) and await may_decide_on(state, user, row)
    ]


async def active_access(
    *, session: AsyncSession, state: ApiState, user: User
) -> list[AccessRequest]:
    """Access in force now that the caller may end: their own, what they approve, or all
    of it for admins (a failed revocation too: its access may still be there)."""
    rows = await store.in_status(session, *IN_FORCE)
    return [row for row in rows if may_end(state.access.policy, user, row)]
