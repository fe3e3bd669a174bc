"""The portal's pages for deciding and overseeing access: what waits for my decision
(approve or reject, with a comment), and the access in force that I may end. The same
use cases as `/v1/approvals`, `/v1/requests/{id}/{decision}` and `/revoke`: the policy
decides who may decide (never the requester), whatever the page offered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from elevate_request_api import queries, service
from elevate_request_api.deps import AppState, DbSession
from elevate_request_api.domain import InvalidRequestError
from elevate_request_api.portal import forms
from elevate_request_api.portal.deps import SignedIn, parse_request_id, read_form
from elevate_request_api.portal.login import safe_next
from elevate_request_api.portal.render import page
from elevate_request_api.schemas import Comment

router = APIRouter(include_in_schema=False)
DECISIONS = ("approve", "reject")


@router.get("/approvals", response_class=HTMLResponse)
async def approvals(
    request: Request,
    visitor: SignedIn,
    state: AppState,
    session: DbSession,
    sent: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Pending requests I may decide, oldest first; `sent`: the one I just decided (it
    stays pending until approval has recorded the decision, a moment later)."""
    rows = await queries.approvals(session=session, state=state, user=visitor.user)
    just = next((r for r in rows if str(r.id) == sent), None)
    rows = [r for r in rows if r is not just]
    return page(request, "approvals.html", rows=rows, sent=just)


@router.post("/requests/{request_id}/decision", response_class=HTMLResponse)
async def decide(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """Approve or reject (the button pressed), with the comment typed."""
    fields = await read_form(request, visitor)
    decision = fields.get("decision", "")
    if decision not in DECISIONS:
        raise InvalidRequestError("decision: approve or reject")
    comment = forms.validated(Comment, comment=fields.get("comment") or None).comment
    row = await service.decide(
        session=session,
        state=state,
        user=visitor.user,
        request_id=parse_request_id(request_id),
        decision="approve" if decision == "approve" else "reject",
        comment=comment,
        now=state.clock.now(),
    )
    back = safe_next(fields.get("back") or "/approvals")
    if back == "/approvals":
        back += f"?sent={row.id}"
    return RedirectResponse(back, status_code=303)


@router.get("/active", response_class=HTMLResponse)
async def active(
    request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """Access in force now that I may end: mine, what I approve, all of it for admins."""
    rows = await queries.active_access(session=session, state=state, user=visitor.user)
    now = state.clock.now()
    return page(request, "active.html", rows=rows, left=lambda end: _left(end, now))


def _left(end: datetime, now: datetime) -> str:
    minutes = max(0, int((end - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
