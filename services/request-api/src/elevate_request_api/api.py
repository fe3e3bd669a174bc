"""request-api routes under /v1. Every route needs a bearer token; errors are RFC 9457."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from elevate_core.errors import ElevateError
from elevate_core.problems import PROBLEM_JSON, PROBLEM_TYPE, problem_response
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from elevate_request_api import catalog, domain, oversight, queries, service
from elevate_request_api.deps import AppState, CurrentClaims, CurrentUser, DbSession
from elevate_request_api.domain import Status
from elevate_request_api.portal.render import error_page
from elevate_request_api.schemas import (
    Accepted,
    AccountOut,
    ActivityOut,
    Comment,
    EligibilityItem,
    Me,
    Page,
    RequestCreate,
    RequestDetail,
    RequestOut,
    Review,
    TimelineOut,
    UtcDateTime,
)
from elevate_request_api.stream import SlotStreamingResponse, status_events

_PROBLEM: dict[str, Any] = {
    "content": {PROBLEM_JSON: {}},
    "description": "RFC 9457 problem details",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: _PROBLEM,
    403: _PROBLEM,
    404: _PROBLEM,
    409: _PROBLEM,
    413: _PROBLEM,
    422: _PROBLEM,
}
router = APIRouter(prefix="/v1", responses={401: _PROBLEM})

# Where each domain error is answered: one place, so a route never picks a status.
_STATUS: dict[type[ElevateError], int] = {
    domain.InvalidRequestError: 422,
    domain.NotEligibleError: 403,
    domain.NotAllowedError: 403,
    domain.RequestNotFoundError: 404,
    domain.StateConflictError: 409,
    domain.UnknownSubjectError: 422,
    domain.TooManyStreamsError: 429,
    domain.SlackSignatureError: 401,
    domain.SlackOffError: 404,
    domain.DirectoryUnavailableError: 503,
}


_TITLES = {
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    422: "Not accepted",
    429: "Too many open pages",
    503: "Try again shortly",
}


def install_error_mapping(app: FastAPI) -> None:
    """Answer every domain error a use case raises with its RFC 9457 problem."""

    async def on_domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, domain.RequestError | domain.DirectoryUnavailableError)
        status = next(code for cls, code in _STATUS.items() if isinstance(exc, cls))
        if not request.url.path.startswith(("/v1/", "/integrations/")):  # a portal page
            return error_page(request, status, _TITLES.get(status, "Refused"), str(exc))
        headers = None
        extensions: dict[str, Any] = {}
        if isinstance(exc, domain.RequestError):
            slug = exc.slug
            if exc.errors:
                extensions["errors"] = exc.errors
        else:
            slug = "directory-unavailable"
            headers = {"Retry-After": str(int(exc.retry_after or 5))}
        return problem_response(
            status,
            str(exc),
            instance=request.url.path,
            type_=PROBLEM_TYPE + slug,
            headers=headers,
            **extensions,
        )

    app.add_exception_handler(domain.RequestError, on_domain_error)
    app.add_exception_handler(domain.DirectoryUnavailableError, on_domain_error)


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


Search = Annotated[
    str | None, Query(min_length=1, max_length=128, description="substring of name, id, OU path")
]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("/eligibility", response_model=Page[EligibilityItem], responses=ERRORS)
async def eligibility(
    user: CurrentUser,
    state: AppState,
    q: Search = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """What the caller may request, by account name; `q` searches account name, id, OU
    path and permission set."""
    items, next_cursor = await catalog.eligibility(
        state=state, user=user, q=q, cursor=cursor, limit=limit
    )
    # Built from validated items: serialised once, not validated again on the way out.
    page = Page[EligibilityItem](items=items, next_cursor=next_cursor)
    return Response(page.model_dump_json(), media_type="application/json")


@router.get("/accounts", response_model=Page[AccountOut], responses=ERRORS)
async def accounts(
    user: CurrentUser,
    state: AppState,
    q: Search = None,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Page[AccountOut]:
    """Accounts for pickers: those the caller is eligible for (all for auditors, admins)."""
    items, next_cursor = await catalog.accounts(
        state=state, user=user, q=q, cursor=cursor, limit=limit
    )
    return Page[AccountOut](items=items, next_cursor=next_cursor)


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
        now=state.clock.now(),
    )
    response.headers["Location"] = f"/v1/requests/{row.id}"
    return Accepted(id=row.id, status=row.status)


@router.get("/requests", response_model=Page[RequestOut], responses=ERRORS)
async def list_requests(
    user: CurrentUser,
    state: AppState,
    session: DbSession,
    status: Status | None = None,
    account_id: Annotated[str | None, Query(pattern=r"^[0-9]{12}$")] = None,
    created_after: UtcDateTime | None = None,
    created_before: UtcDateTime | None = None,
    scope: Literal["mine", "all"] = "mine",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[RequestOut]:
    """Your requests, newest first (`scope=all`: everyone's, for auditors and admins, as
    `GET /v1/audit/requests` answers it, and recorded as it is)."""
    if scope == "all":
        filters = oversight.AuditFilters(
            account_id=account_id,
            status=status,
            created_after=created_after,
            created_before=created_before,
        )
        rows, next_cursor = await oversight.audit_requests(
            session=session, state=state, user=user, filters=filters, cursor=cursor, limit=limit
        )
    else:
        rows, next_cursor = await queries.list_requests(
            session=session,
            user=user,
            status=status,
            account_id=account_id,
            created_after=created_after,
            created_before=created_before,
            cursor=cursor,
            limit=limit,
        )
    return Page[RequestOut](items=[RequestOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/requests/{request_id}", response_model=RequestDetail, responses=ERRORS)
async def get_request(
    request_id: uuid.UUID, user: CurrentUser, state: AppState, session: DbSession
) -> RequestDetail:
    row, timeline, activity = await queries.get_request(
        session=session, state=state, user=user, request_id=request_id
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
        session=session, state=state, user=user, request_id=request_id, now=state.clock.now()
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
        now=state.clock.now(),
    )
    return Accepted(id=row.id, status=row.status)


@router.post(
    "/requests/{request_id}/review", status_code=202, response_model=Accepted, responses=ERRORS
)
async def review(
    request_id: uuid.UUID, body: Review, user: CurrentUser, state: AppState, session: DbSession
) -> Accepted:
    """Complete a break-glass request's after-the-fact review (auditors and admins; never
    the requester)."""
    row = await oversight.review(
        session=session,
        state=state,
        user=user,
        request_id=request_id,
        comment=body.comment,
        now=state.clock.now(),
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
        now=state.clock.now(),
    )
    return Accepted(id=row.id, status=row.status)


@router.get("/approvals", response_model=list[RequestOut])
async def approvals(user: CurrentUser, state: AppState, session: DbSession) -> list[RequestOut]:
    """Pending requests the caller may decide (never their own)."""
    rows = await queries.approvals(session=session, state=state, user=user)
    return [RequestOut.of(r) for r in rows]


@router.get(
    "/requests/{request_id}/stream",
    responses=ERRORS | {429: _PROBLEM},
    response_class=StreamingResponse,
)
async def stream(
    request_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    claims: CurrentClaims,
    state: AppState,
    session: DbSession,
) -> StreamingResponse:
    """Server-Sent Events: `event: status` on every status change; `event: expired` when
    the token expires, which ends the stream (reconnect with a fresh token)."""
    await service.load_visible(session=session, state=state, user=user, request_id=request_id)
    state.streams.take(user.user_id)
    until = datetime.fromtimestamp(claims.raw["exp"], UTC)  # required and numeric
    return SlotStreamingResponse(
        status_events(request, state.ctx.db, request_id, until=until, clock=state.clock),
        slots=state.streams,
        user_id=user.user_id,
    )
