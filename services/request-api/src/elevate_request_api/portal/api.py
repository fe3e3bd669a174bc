"""The portal's pages (docs/portal.md): server-rendered HTML over the same use cases as
/v1, signed in by the portal session (portal.deps), every form post CSRF-checked.
Everything works without JavaScript; portal.js only makes the search live and the
request's page follow its status (SSE)."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from elevate_request_api import catalog, queries, service
from elevate_request_api.deps import AppState, DbSession
from elevate_request_api.domain import RequestNotFoundError
from elevate_request_api.portal import approve, forms, login, oversee
from elevate_request_api.portal.deps import (
    CsrfRefused,
    NotAForm,
    SignedIn,
    SignInRequired,
    Visitor,
    current_session,
    parse_request_id,
    read_form,
)
from elevate_request_api.portal.login import safe_next
from elevate_request_api.portal.render import error_page, page
from elevate_request_api.portal.timeline import activity_rows, steps
from elevate_request_api.stream import SlotStreamingResponse, status_events

router = APIRouter(include_in_schema=False)
PICKER_LIMIT = 25  # accounts shown per search; more: type more of it


def see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, state: AppState, session: DbSession) -> Response:
    """Signed in: my requests; otherwise what Elevate is, and the way in."""
    if await current_session(request, state, session) is not None:
        return see_other("/requests")
    return page(request, "signin.html", user=None, message=None)


# ---- request access ----------------------------------------------------------------


Q = Annotated[str | None, Query(max_length=128)]


@router.get("/request", response_class=HTMLResponse)
async def new_request(
    request: Request,
    visitor: SignedIn,
    state: AppState,
    q: Q = None,
    account: Annotated[str | None, Query(max_length=12)] = None,
) -> Response:
    """Pick an account (searchable), then fill in the request for it."""
    if account:
        return await _request_form(request, visitor, state, account, forms.RequestForm({}))
    found, more = await catalog.requestable_accounts(
        state=state, user=visitor.user, q=(q or "").strip() or None, limit=PICKER_LIMIT
    )
    return page(
        request,
        "new_request.html",
        account=None,
        accounts=found,
        more=more,
        q=q,
    )


@router.get("/request/accounts", response_class=HTMLResponse)
async def account_results(
    request: Request, visitor: SignedIn, state: AppState, q: Q = None
) -> Response:
    """The picker's results alone (portal.js swaps them in as the user types)."""
    found, more = await catalog.requestable_accounts(
        state=state, user=visitor.user, q=(q or "").strip() or None, limit=PICKER_LIMIT
    )
    return page(request, "account_results.html", accounts=found, more=more, q=q)


async def _request_form(
    request: Request,
    visitor: Visitor,
    state: AppState,
    account_id: str,
    form: forms.RequestForm,
    *,
    status: int = 200,
) -> Response:
    items = await catalog.options(state=state, user=visitor.user, account_id=account_id)
    if not items:
        raise RequestNotFoundError(f"you may not request anything on account {account_id}")
    first = items[0]
    choices = [i for i in items if not i.break_glass]
    offered = {c.permission_set for c in choices}
    only_break_glass = [i for i in items if i.break_glass and i.permission_set not in offered]
    return page(
        request,
        "new_request.html",
        status=status,
        account={
            "account_id": first.account_id,
            "account_name": first.account_name,
            "ou_path": first.ou_path,
        },
        items=choices + only_break_glass,
        form=form,
        errors=form.errors,
        max_minutes=max(i.max_duration_minutes for i in items),
        ticket_required=any(i.ticket_required for i in items),
        break_glass=sorted({i.permission_set for i in items if i.break_glass}),
        q=None,
    )


@router.post("/request", response_class=HTMLResponse)
async def submit_request(
    request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """The request form's post: stored and on to its page, or shown again with each
    refusal by its field (422)."""
    form = forms.RequestForm(await read_form(request, visitor))
    body = form.request()
    account_id = form.values.get("account_id", "")
    if body is not None:
        try:
            row, _ = await service.submit(
                session=session,
                state=state,
                user=visitor.user,
                body=body,
                idempotency_key=None,
                now=state.clock.now(),
            )
        except forms.REFUSALS as exc:
            form.refused(exc)
        else:
            return see_other(f"/requests/{row.id}")
    return await _request_form(request, visitor, state, account_id, form, status=422)


# ---- my requests -------------------------------------------------------------------


@router.get("/requests", response_class=HTMLResponse)
async def my_requests(
    request: Request,
    visitor: SignedIn,
    session: DbSession,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    rows, next_cursor = await queries.list_requests(
        session=session,
        user=visitor.user,
        status=None,
        account_id=None,
        created_after=None,
        created_before=None,
        cursor=cursor,
        limit=50,
    )
    return page(
        request,
        "requests.html",
        rows=rows,
        next_cursor=next_cursor,
    )


@router.get("/requests/{request_id}", response_class=HTMLResponse)
async def request_page(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    return await _request_view(request_id, request, visitor, state, session, "detail.html")


@router.get("/requests/{request_id}/panel", response_class=HTMLResponse)
async def request_panel(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """Status, actions and timeline alone (portal.js swaps them in on each status event)."""
    return await _request_view(request_id, request, visitor, state, session, "panel.html")


async def _request_view(
    request_id: str,
    request: Request,
    visitor: Visitor,
    state: AppState,
    session: DbSession,
    template: str,
) -> Response:
    row, timeline, activity = await queries.get_request(
        session=session, state=state, user=visitor.user, request_id=parse_request_id(request_id)
    )
    return page(
        request,
        template,
        r=row,
        timeline=timeline,
        steps=steps(row.status, timeline),
        activity=activity_rows(activity, await queries.uncovered_around(session=session, row=row)),
        can_decide=await queries.may_decide_on(state, visitor.user, row),
        user=visitor.user,
        csrf=visitor.csrf,
    )


@router.get("/requests/{request_id}/events")
async def request_events(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """Server-Sent Events: `status` on each change; `expired` when the portal session
    would have timed out (the page reloads, which asks for a sign-in if it has)."""
    row = await service.load_visible(
        session=session, state=state, user=visitor.user, request_id=parse_request_id(request_id)
    )
    state.streams.take(visitor.user.user_id)
    idle = timedelta(seconds=state.settings.portal_idle_timeout_seconds)
    until = min(visitor.live.expires_at, state.clock.now() + idle)
    return SlotStreamingResponse(
        status_events(request, state.ctx.db, row.id, until=until, clock=state.clock),
        slots=state.streams,
        user_id=visitor.user.user_id,
    )


@router.post("/requests/{request_id}/cancel", response_class=HTMLResponse)
async def cancel(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    await read_form(request, visitor)
    row = await service.cancel(
        session=session,
        state=state,
        user=visitor.user,
        request_id=parse_request_id(request_id),
        now=state.clock.now(),
    )
    return see_other(f"/requests/{row.id}")


@router.post("/requests/{request_id}/revoke", response_class=HTMLResponse)
async def end_now(
    request_id: str, request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """End access now (the grant is removed by grant-worker; the page follows)."""
    fields = await read_form(request, visitor)
    row = await service.revoke(
        session=session,
        state=state,
        user=visitor.user,
        request_id=parse_request_id(request_id),
        comment="ended from the portal",
        now=state.clock.now(),
    )
    return see_other(safe_next(fields.get("back") or f"/requests/{row.id}"))


# ---- assets ------------------------------------------------------------------------


def _read(name: str) -> bytes:
    return resources.files("elevate_request_api.portal").joinpath("static", name).read_bytes()


# Read once at import: they are part of the installed package, never changed at run time.
_ASSETS = {name: _read(name) for name in ("portal.css", "portal.js")}


def _asset(name: str, media_type: str) -> Response:
    headers = {"Cache-Control": "public, max-age=300"}
    return Response(_ASSETS[name], media_type=media_type, headers=headers)


# The portal's own stylesheet and script: nothing is loaded from elsewhere.
@router.get("/static/portal.css")
async def stylesheet() -> Response:
    return _asset("portal.css", "text/css")


@router.get("/static/portal.js")
async def script() -> Response:
    return _asset("portal.js", "text/javascript")


def install_portal(app: FastAPI) -> None:
    """The portal's routes, and the answers to its own refusals."""
    app.include_router(login.router)
    app.include_router(router)
    app.include_router(approve.router)
    app.include_router(oversee.router)

    async def sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return see_other(exc.location)

    async def refused(request: Request, exc: Exception) -> Response:
        status, title, detail = _REFUSALS[type(exc)]
        return error_page(request, status, title, detail)

    app.add_exception_handler(SignInRequired, sign_in)
    for cls in _REFUSALS:
        app.add_exception_handler(cls, refused)


_REFUSALS: dict[type[Exception], tuple[int, str, str]] = {
    CsrfRefused: (
        403,
        "Form refused",
        "This form was not sent from your current portal session. Open the page again "
        "and send it from there.",
    ),
    NotAForm: (415, "Form refused", "The portal accepts only its own forms."),
}
