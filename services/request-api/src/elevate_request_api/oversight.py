"""Auditors' and admins' use cases (keyword-only): the request history with filters and
its CSV export, the policy as loaded and explained, and break-glass reviews.

Every read here is itself evidence: it is recorded as an `AuditTrailRead` event (who,
what, the query as asked) in the caller's transaction, so no export happens without its
record reaching the requests topic (the outbox publishes it even if Kafka is away).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Literal

from elevate_core.db import Database
from elevate_core.directory.errors import DirectoryError, UserNotFoundError
from elevate_core.directory.models import User
from elevate_core.events.models import AuditTrailRead, BreakGlassReviewed
from elevate_core.policy import Explanation, Policy, explain
from elevate_core.policy.approvals import is_same_person
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api import csvexport, store
from elevate_request_api.deps import ApiState
from elevate_request_api.domain import (
    DirectoryUnavailableError,
    NotAllowedError,
    StateConflictError,
    UnknownSubjectError,
)
from elevate_request_api.models import AccessRequest
from elevate_request_api.queries import decode_cursor, page_of
from elevate_request_api.service import load_visible, person, publish, requester_of

EXPORT_BATCH = 2000  # rows per query while exporting: memory stays flat at any size


# The history's filters are the store's (each narrows it; None: not asked).
AuditFilters = store.HistoryFilters


def _asked(filters: AuditFilters) -> dict[str, str]:
    """The filters as strings, for the record of who asked for what."""
    out: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


def _overseer(policy: Policy, user: User) -> None:
    if not (policy.is_auditor(user) or policy.is_admin(user)):
        raise NotAllowedError("only auditors and admins may read the audit trail")


async def _record_read(
    session: AsyncSession,
    state: ApiState,
    user: User,
    *,
    resource: Literal["requests", "policy", "policy-explain"],
    asked: Mapping[str, str],
    format: Literal["json", "csv"] = "json",
) -> None:
    event = AuditTrailRead(
        reader=person(user), resource=resource, format=format, filters=dict(asked)
    )
    # Keyed by the reader: one person's reads stay in order on one partition.
    await state.outbox.add_envelope(
        session, event, subject=None, key=user.user_id, time=state.clock.now()
    )


async def audit_requests(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    filters: AuditFilters,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[AccessRequest], str | None]:
    """A page of every request (newest first) matching `filters`, and the next cursor."""
    _overseer(state.access.policy, user)
    after = decode_cursor(cursor) if cursor else None
    asked = _asked(filters) | {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
    await _record_read(session, state, user, resource="requests", asked=asked)
    rows = await store.page(session, **filters, after=after, limit=limit)
    return page_of(rows, limit)


async def start_export(
    *, session: AsyncSession, state: ApiState, user: User, filters: AuditFilters
) -> None:
    """Check and record a CSV export; it is committed before the first row is sent."""
    _overseer(state.access.policy, user)
    await _record_read(
        session, state, user, resource="requests", asked=_asked(filters), format="csv"
    )


async def export_rows(db: Database, filters: AuditFilters) -> AsyncIterator[str]:
    """The CSV export: a header, then every matching request, newest first, read in
    keyset batches of `EXPORT_BATCH` (no transaction or cursor held across the stream)."""
    yield csvexport.header()
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with db.sessions() as session:
            rows = await store.page_rows(session, **filters, after=after, limit=EXPORT_BATCH)
            chunk = csvexport.rows(rows[:EXPORT_BATCH])
        yield chunk
        if len(rows) <= EXPORT_BATCH:
            return
        last = rows[EXPORT_BATCH - 1]
        after = (last.created_at, last.id)


async def review(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    request_id: uuid.UUID,
    comment: str,
    now: datetime,
) -> AccessRequest:
    """Complete a break-glass request's after-the-fact review (auditors and admins)."""
    # Not found before not allowed, as on every route: a request the caller cannot see
    # answers 404 whoever they are.
    row = await load_visible(
        session=session, state=state, user=user, request_id=request_id, for_update=True
    )
    _overseer(state.access.policy, user)
    if is_same_person(await requester_of(state, row), user):
        raise NotAllowedError("nobody may review their own break-glass access")
    if not row.break_glass:
        raise StateConflictError("only break-glass requests are reviewed")
    if row.review == "done":
        raise StateConflictError("the review of this request is already done")
    event = BreakGlassReviewed(request_id=row.id, reviewer=person(user), comment=comment)
    return await publish(session, state, event, request_id=row.id, now=now)


async def read_policy(*, session: AsyncSession, state: ApiState, user: User) -> Policy:
    """The policy in force (auditors and admins); the read is recorded."""
    _overseer(state.access.policy, user)
    policy = state.access.policy
    await _record_read(session, state, user, resource="policy", asked={"version": policy.version})
    return policy


async def explain_policy(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    subject: str,
    account: str,
    permission_set: str,
    break_glass: bool,
) -> Explanation:
    """Why `subject` (a user name) may or may not request `permission_set` on `account`
    (an id or a name) — the policy module's own explanation, for admins."""
    if not state.access.policy.is_admin(user):
        raise NotAllowedError("only admins may explain the policy for another user")
    asked = {
        "user": subject,
        "account": account,
        "permission_set": permission_set,
        "break_glass": str(break_glass).lower(),
    }
    await _record_read(session, state, user, resource="policy-explain", asked=asked)
    try:
        who = await state.access.directory.get_user(subject)
    except UserNotFoundError:
        raise UnknownSubjectError(f"no Identity Center user is named {subject!r}") from None
    except DirectoryError as exc:
        raise DirectoryUnavailableError("the AWS directory is unavailable; try again") from exc
    evaluator = await state.access.evaluator()
    target = evaluator.account(account)
    if target is None:
        raise UnknownSubjectError(f"no account {account!r} in the organisation")
    return explain(state.access.policy, who, target, permission_set, break_glass=break_glass)
