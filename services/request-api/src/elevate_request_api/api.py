"""request-api routes under /v1. Every route needs a bearer token; errors are RFC 9457."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from elevate_core.policy.approvals import Requester, may_decide
from elevate_core.problems import PROBLEM_JSON, Problem
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import and_, or_, select

from elevate_request_api import service
from elevate_request_api.deps import AppState, CurrentUser, DbSession
from elevate_request_api.models import AccessRequest, ActivityRecord, TimelineEntry
from elevate_request_api.schemas import (
    Accepted,
    ActivityOut,
    Comment,
    EligibilityItem,
    Me,
    Page,
    RequestCreate,
    RequestDetail,
    RequestOut,
    TimelineOut,
)
from elevate_request_api.status import Status
from elevate_request_api.stream import status_events

_PROBLEM: dict[str, Any] = {
    "content": {PROBLEM_JSON: {}},
    "description": "RFC 9457 problem details",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: _PROBLEM,
    403: _PROBLEM,
    404: _PROBLEM,
    409: _PROBLEM,
    422: _PROBLEM,
}
router = APIRouter(prefix="/v1", responses={401: _PROBLEM})


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/me", response_model=Me)
async def me(user: CurrentUser, state: AppState) -> Me:
    return Me(
        user_name=user.user_name,
        user_id=user.user_id,
        email=user.email,
        display_name=user.display_name,
        groups=sorted(user.groups),
        roles=service.roles(state.access.policy, user),
    )


@router.get("/eligibility", response_model=list[EligibilityItem])
async def eligibility(user: CurrentUser, state: AppState) -> list[EligibilityItem]:
    return await service.eligibility(state=state, user=user)


@router.post("/requests", status_code=202, response_model=Accepted, responses=ERRORS)
async def create_request(
    body: RequestCreate,
    user: CurrentUser,
    state: AppState,
    session: DbSession,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Accepted:
    """Ask for access. Accepted requests are decided asynchronously: follow `Location`."""
    row, _created = await service.submit(
        session=session,
        state=state,
        user=user,
        body=body,
        idempotency_key=idempotency_key,
        now=_now(),
    )
    response.headers["Location"] = f"/v1/requests/{row.id}"
    return Accepted(id=row.id, status=row.status)


def _encode_cursor(row: AccessRequest) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, rid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(rid)
    except ValueError:
        raise Problem(422, "cursor: not a cursor this API returned") from None


@router.get("/requests", response_model=Page[RequestOut], responses=ERRORS)
async def list_requests(
    user: CurrentUser,
    state: AppState,
    session: DbSession,
    status: Status | None = None,
    account_id: Annotated[str | None, Query(pattern=r"^[0-9]{12}$")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    scope: Literal["mine", "all"] = "mine",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[RequestOut]:
    """Your requests, newest first (`scope=all` for auditors and admins)."""
    policy = state.access.policy
    stmt = select(AccessRequest)
    if scope == "all":
        if not (policy.is_auditor(user) or policy.is_admin(user)):
            raise Problem(403, "scope=all is for auditors and admins")
    else:
        stmt = stmt.where(AccessRequest.requester_user_id == user.user_id)
    if status is not None:
        stmt = stmt.where(AccessRequest.status == status.value)
    if account_id is not None:
        stmt = stmt.where(AccessRequest.account_id == account_id)
    if created_after is not None:
        stmt = stmt.where(AccessRequest.created_at >= created_after)
    if created_before is not None:
        stmt = stmt.where(AccessRequest.created_at < created_before)
    if cursor:
        at, rid = _decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                AccessRequest.created_at < at,
                and_(AccessRequest.created_at == at, AccessRequest.id < rid),
            )
        )
    rows = (
        (
            await session.execute(
                stmt.order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc()).limit(
                    limit + 1
                )
            )
        )
        .scalars()
        .all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[RequestOut](
        items=[RequestOut.of(r) for r in rows],
        next_cursor=_encode_cursor(rows[-1]) if more and rows else None,
    )


@router.get("/requests/{request_id}", response_model=RequestDetail, responses=ERRORS)
async def get_request(
    request_id: uuid.UUID, user: CurrentUser, state: AppState, session: DbSession
) -> RequestDetail:
    row = await service.load_visible(session=session, state=state, user=user, request_id=request_id)
    timeline = (
        (
            await session.execute(
                select(TimelineEntry)
                .where(TimelineEntry.request_id == row.id)
                .order_by(TimelineEntry.at, TimelineEntry.id)
            )
        )
        .scalars()
        .all()
    )
    activity = (
        (
            await session.execute(
                select(ActivityRecord)
                .where(ActivityRecord.request_id == row.id)
                .order_by(ActivityRecord.at)
            )
        )
        .scalars()
        .all()
    )
    return RequestDetail(
        **RequestOut.of(row).model_dump(),
        timeline=[TimelineOut.model_validate(t) for t in timeline],
        activity=[ActivityOut.model_validate(a) for a in activity],
    )


@router.post(
    "/requests/{request_id}/cancel", status_code=202, response_model=Accepted, responses=ERRORS
)
async def cancel(
    request_id: uuid.UUID, user: CurrentUser, state: AppState, session: DbSession
) -> Accepted:
    row = await service.cancel(
        session=session, state=state, user=user, request_id=request_id, now=_now()
    )
    return Accepted(id=row.id, status=row.status)


@router.post(
    "/requests/{request_id}/revoke", status_code=202, response_model=Accepted, responses=ERRORS
)
async def revoke(
    request_id: uuid.UUID,
    user: CurrentUser,
    state: AppState,
    session: DbSession,
    body: Comment | None = None,
) -> Accepted:
    row = await service.revoke(
        session=session,
        state=state,
        user=user,
        request_id=request_id,
        comment=body.comment if body else None,
        now=_now(),
    )
    return Accepted(id=row.id, status=row.status)


@router.post(
    "/requests/{request_id}/{decision}",
    status_code=202,
    response_model=Accepted,
    responses=ERRORS,
)
async def decide(
    request_id: uuid.UUID,
    decision: Literal["approve", "reject"],
    user: CurrentUser,
    state: AppState,
    session: DbSession,
    body: Comment | None = None,
) -> Accepted:
    """Approve or reject (`decision`), with an optional comment. Only approvers the
    policy names may decide, and never the requester."""
    # Declared after /cancel and /revoke, which this path would otherwise shadow.
    row = await service.decide(
        session=session,
        state=state,
        user=user,
        request_id=request_id,
        decision=decision,
        comment=body.comment if body else None,
        now=_now(),
    )
    return Accepted(id=row.id, status=row.status)


@router.get("/approvals", response_model=list[RequestOut])
async def approvals(user: CurrentUser, state: AppState, session: DbSession) -> list[RequestOut]:
    """Pending requests the caller may decide (never their own)."""
    rows = (
        (
            await session.execute(
                select(AccessRequest)
                .where(AccessRequest.status == Status.PENDING.value)
                .order_by(AccessRequest.created_at)
            )
        )
        .scalars()
        .all()
    )
    policy = state.access.policy
    out = []
    for row in rows:
        rule = policy.approval_rules.get(row.approval_rule)
        if rule is None:
            continue
        requester = Requester(user_name=row.requester_user_name, user_id=row.requester_user_id)
        if may_decide(rule, requester=requester, decider=user):
            out.append(RequestOut.of(row))
    return out


@router.get("/requests/{request_id}/stream", responses=ERRORS, response_class=StreamingResponse)
async def stream(
    request_id: uuid.UUID, request: Request, user: CurrentUser, state: AppState, session: DbSession
) -> StreamingResponse:
    """Server-Sent Events: `event: status` on every status change."""
    await service.load_visible(session=session, state=state, user=user, request_id=request_id)
    return StreamingResponse(
        status_events(request, state.ctx.db, request_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
