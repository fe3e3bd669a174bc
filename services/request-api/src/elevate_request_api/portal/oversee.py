"""The portal's pages for auditors and admins: every request with filters and its CSV
export, the break-glass reviews to complete, the policy in force and (admins) its
explanation for someone. The same use cases as `/v1/audit/requests`, `/v1/policy` and
`/v1/policy/explain`: each read is recorded as an `AuditTrailRead` event, and the
oversight module refuses anyone else (403), whatever the navigation showed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Annotated, Any
from urllib.parse import urlencode

import yaml
from elevate_core.policy import Policy
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from elevate_request_api import oversight
from elevate_request_api.audit_api import csv_export
from elevate_request_api.deps import AppState, DbSession
from elevate_request_api.domain import InvalidRequestError, Status
from elevate_request_api.oversight import AuditFilters
from elevate_request_api.portal import forms
from elevate_request_api.portal.deps import SignedIn, Visitor, parse_request_id, read_form
from elevate_request_api.portal.render import page, zone_of
from elevate_request_api.schemas import Review

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Query(max_length=128)]
_STATUSES = {s.value for s in Status}
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _day(request: Request, raw: str, *, end: bool) -> datetime | None:
    """A `YYYY-MM-DD` from a date field: its start (or end) in the browser's zone."""
    if not raw:
        return None
    if not _DAY.match(raw):
        raise InvalidRequestError("dates: give them as YYYY-MM-DD")
    day = datetime.fromisoformat(raw).date()
    at = datetime.combine(day, time.max if end else time.min, tzinfo=zone_of(request) or UTC)
    return at.astimezone(UTC)


def filters_of(request: Request) -> tuple[AuditFilters, dict[str, str]]:
    """The audit page's filters from its query, and the query as typed (shown back)."""
    q = {k: v.strip()[:128] for k, v in request.query_params.items()}
    status, account = q.get("status", ""), q.get("account_id", "")
    if status and status not in _STATUSES:
        raise InvalidRequestError(f"status: one of {', '.join(sorted(_STATUSES))}")
    if account and not _ACCOUNT.match(account):
        raise InvalidRequestError("account_id: a 12-digit account id")
    kind = q.get("kind", "")
    filters = AuditFilters(
        requester=q.get("requester") or None,
        account_id=account or None,
        permission_set=q.get("permission_set") or None,
        status=Status(status) if status else None,
        created_after=_day(request, q.get("from", ""), end=False),
        created_before=_day(request, q.get("to", ""), end=True),
        break_glass=True if kind in ("break_glass", "review") else None,
        review="pending" if kind == "review" else None,
    )
    return filters, q


@router.get("/audit", response_class=HTMLResponse)
async def audit(
    request: Request,
    visitor: SignedIn,
    state: AppState,
    session: DbSession,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Every request, newest first, filtered; a page at a time, or all as CSV."""
    filters, asked = filters_of(request)
    rows, next_cursor = await oversight.audit_requests(
        session=session, state=state, user=visitor.user, filters=filters, cursor=cursor, limit=50
    )
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "cursor"])
    return page(
        request,
        "audit.html",
        rows=rows,
        asked=asked,
        statuses=sorted(_STATUSES),
        next_cursor=next_cursor,
        query=query,
    )


@router.get("/audit/export")
async def export(
    request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """The filtered history as CSV (recorded before the first row is sent)."""
    filters, _ = filters_of(request)
    # Committed before the first row is sent (the session's scope is the route's).
    await oversight.start_export(session=session, state=state, user=visitor.user, filters=filters)
    return csv_export(state, filters)


@router.post("/requests/{request_id}/review", response_class=HTMLResponse)
async def review(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """Complete a break-glass request's review, with what was checked (required)."""
    fields = await read_form(request, visitor)
    comment = forms.validated(Review, comment=fields.get("comment", "")).comment
    await oversight.review(
        session=session,
        state=state,
        user=visitor.user,
        request_id=parse_request_id(request_id),
        comment=comment,
        now=state.clock.now(),
    )
    return RedirectResponse("/audit?kind=review", status_code=303)


@router.get("/policy", response_class=HTMLResponse)
async def policy(
    request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """The policy in force on this replica, read-only (and, for admins, the explain form)."""
    found = await oversight.read_policy(session=session, state=state, user=visitor.user)
    return _policy_page(request, visitor, state, found, explanation=None, asked={})


@router.post("/policy/explain", response_class=HTMLResponse)
async def explain(
    request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """Why someone may (or may not) request a permission set on an account (admins)."""
    fields = await read_form(request, visitor)
    asked = {k: fields.get(k, "").strip()[:128] for k in ("user", "account", "permission_set")}
    if not all(asked.values()):
        raise InvalidRequestError("explain: give a user, an account and a permission set")
    result = await oversight.explain_policy(
        session=session,
        state=state,
        user=visitor.user,
        subject=asked["user"],
        account=asked["account"],
        permission_set=asked["permission_set"],
        break_glass=fields.get("break_glass") == "on",
    )
    found = state.access.policy
    return _policy_page(request, visitor, state, found, explanation=result.as_dict(), asked=asked)


def _policy_page(
    request: Request,
    visitor: Visitor,
    state: AppState,
    found: Policy,
    *,
    explanation: dict[str, Any] | None,
    asked: dict[str, str],
) -> Response:
    document = found.document.model_dump(mode="json", exclude_none=True)
    return page(
        request,
        "policy.html",
        version=found.version,
        loaded_at=state.access.watcher.loaded_at,
        resolved=not state.access.watcher.unresolved,
        text=yaml.safe_dump(document, sort_keys=False, allow_unicode=True),
        admin="admin" in visitor.roles,
        explanation=explanation,
        asked=asked,
    )
