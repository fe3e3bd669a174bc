"""Auditors' and admins' routes under /v1: the request history (JSON pages or a CSV
export) and the policy. Use cases in oversight.py; errors mapped in api.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from elevate_request_api import oversight
from elevate_request_api.api import ERRORS
from elevate_request_api.deps import ApiState, AppState, CurrentUser, DbSession
from elevate_request_api.domain import Status
from elevate_request_api.oversight import AuditFilters
from elevate_request_api.schemas import (
    ExplainQuery,
    ExplanationOut,
    Page,
    PolicyOut,
    RequestOut,
    UtcDateTime,
)

router = APIRouter(prefix="/v1", tags=["audit"])

_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page of requests (JSON), or every matching request (CSV)",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


def csv_export(state: ApiState, filters: AuditFilters) -> StreamingResponse:
    """The export's answer (its start recorded by the caller): every matching row."""
    return StreamingResponse(
        oversight.export_rows(state.ctx.db, filters),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="elevate-requests.csv"'},
    )


@router.get("/audit/requests", response_model=Page[RequestOut], responses=ERRORS | _CSV)
async def audit_requests(
    user: CurrentUser,
    state: AppState,
    session: DbSession,
    requester: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    account_id: Annotated[str | None, Query(pattern=r"^[0-9]{12}$")] = None,
    permission_set: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: Status | None = None,
    created_after: UtcDateTime | None = None,
    created_before: UtcDateTime | None = None,
    break_glass: bool | None = None,
    review: Literal["pending", "done"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    format: Literal["json", "csv"] | None = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Every request, newest first, with filters: JSON pages (`limit`, `cursor`), or all
    of them as CSV (`format=csv` or `Accept: text/csv`; `limit` and `cursor` then do not
    apply). Each call is recorded as an `AuditTrailRead` event."""
    filters = AuditFilters(
        requester=requester,
        account_id=account_id,
        permission_set=permission_set,
        status=status,
        created_after=created_after,
        created_before=created_before,
        break_glass=break_glass,
        review=review,
    )
    wants_csv = format == "csv" or (format is None and "text/csv" in (accept or ""))
    if wants_csv:
        await oversight.start_export(session=session, state=state, user=user, filters=filters)
        return csv_export(state, filters)
    rows, next_cursor = await oversight.audit_requests(
        session=session, state=state, user=user, filters=filters, cursor=cursor, limit=limit
    )
    return Page[RequestOut](items=[RequestOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/policy", response_model=PolicyOut, responses=ERRORS)
async def policy(user: CurrentUser, state: AppState, session: DbSession) -> PolicyOut:
    """The policy in force on this replica, its version and when it was loaded."""
    found = await oversight.read_policy(session=session, state=state, user=user)
    return PolicyOut(
        version=found.version,
        loaded_at=state.access.watcher.loaded_at,
        names_resolved=not state.access.watcher.unresolved,
        document=found.document.model_dump(mode="json"),
    )


@router.post("/policy/explain", response_model=ExplanationOut, responses=ERRORS)
async def explain(
    body: ExplainQuery, user: CurrentUser, state: AppState, session: DbSession
) -> ExplanationOut:
    """Why a user may (or may not) request a permission set on an account (admins)."""
    result = await oversight.explain_policy(
        session=session,
        state=state,
        user=user,
        subject=body.user,
        account=body.account,
        permission_set=body.permission_set,
        break_glass=body.break_glass,
    )
    return ExplanationOut.model_validate(result.as_dict())
