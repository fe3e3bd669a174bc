"""Signing in and out of the portal: `/login` starts the OIDC authorization-code flow
(PKCE, state, nonce), `/callback` finishes it and starts a server-side session for the
Identity Center user the bound claim finds, `/logout` ends the session server-side."""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from elevate_core.directory.errors import DirectoryError, UserNotFoundError
from elevate_core.settings import Mode
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from elevate_request_api.auth import AuthError
from elevate_request_api.deps import AppState, DbSession
from elevate_request_api.portal import sessions
from elevate_request_api.portal.deps import SignedIn, read_form, timeouts
from elevate_request_api.portal.render import page
from elevate_request_api.portal.signin import pkce_pair

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
Param = Annotated[str, Query(max_length=2048)]
_LOGIN_SECONDS = int(sessions.LOGIN_TTL.total_seconds())


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a path on this portal only (never `//host`, `/\\host`
    or a URL: no open redirect)."""
    if not raw or not raw.startswith("/") or raw.startswith(("//", "/\\")) or len(raw) > 512:
        return "/requests"
    if any(c in raw for c in "\\\r\n\t") or raw.startswith("/login"):
        return "/requests"
    return raw


def _cookie(response: Response, state: AppState, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=state.settings.mode is not Mode.DEV,
        samesite="lax",  # sent on the IdP's redirect back (a top-level GET), not on posts
    )


def _refused(request: Request, message: str, status: int) -> Response:
    return page(request, "signin.html", status=status, user=None, message=message)


@router.get("/login")
async def login(
    request: Request,
    state: AppState,
    session: DbSession,
    next: Annotated[str | None, Query(max_length=512)] = None,  # the query parameter's name
) -> Response:
    """Off to the identity provider; it sends the browser back to /callback."""
    verifier, challenge = pkce_pair()
    nonce = secrets.token_urlsafe(32)
    login_state = await sessions.begin_login(
        session,
        code_verifier=verifier,
        nonce=nonce,
        next_path=safe_next(next),
        now=state.clock.now(),
    )
    try:
        where = await state.portal.authorize_url(
            state=login_state, nonce=nonce, code_challenge=challenge
        )
    except AuthError as exc:  # an unused sign-in row is purged with the stale ones
        return _refused(request, str(exc), 503)
    response = RedirectResponse(where, status_code=303)
    _cookie(response, state, sessions.LOGIN_COOKIE, login_state, _LOGIN_SECONDS)
    return response


@router.get("/callback")
async def callback(
    request: Request,
    state: AppState,
    session: DbSession,
    code: Param = "",
    state_: Annotated[str, Query(alias="state", max_length=256)] = "",
    error: Param = "",
) -> Response:
    """The identity provider's answer: a session for the user it names, or a page that
    says why not (and offers to sign in again)."""
    cookie = request.cookies.get(sessions.LOGIN_COOKIE, "")
    # The state must be the one this browser was given (no login CSRF), used once.
    if not state_ or not hmac.compare_digest(cookie.encode(), state_.encode()):
        return _refused(request, "That sign-in was not started here. Sign in again.", 400)
    pending = await sessions.take_login(session, state_, now=state.clock.now())
    if pending is None:
        return _refused(request, "That sign-in took too long. Sign in again.", 400)
    if error or not code:
        log.info("portal sign-in: the identity provider answered %r", error[:64])
        return _refused(request, "The identity provider did not sign you in.", 400)
    try:
        claims = await state.portal.redeem(
            code, code_verifier=pending.code_verifier, nonce=pending.nonce
        )
    except AuthError as exc:
        log.warning("portal sign-in refused: %s", exc)
        return _refused(request, f"Sign-in failed: {exc}.", 400)
    key = state.identity.key(claims)
    try:
        user = await state.access.directory.find_user(key)
    except UserNotFoundError:
        return _refused(request, f"No Identity Center user has the {key}.", 403)
    except DirectoryError:
        return _refused(request, "The identity directory is unavailable; try again.", 503)
    await sessions.end(session, request.cookies.get(sessions.COOKIE))  # no fixation
    secret = await sessions.start(
        session, key=key, user_id=user.user_id, timeouts=timeouts(state), now=state.clock.now()
    )
    response = RedirectResponse(pending.next_path, status_code=303)
    _cookie(
        response,
        state,
        sessions.COOKIE,
        secret,
        state.settings.portal_absolute_timeout_seconds,
    )
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/")
    log.info("portal sign-in: %s (%s)", user.user_name, user.user_id)
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(
    request: Request, visitor: SignedIn, state: AppState, session: DbSession
) -> Response:
    """End the session here (server-side: the cookie is worthless afterwards)."""
    await read_form(request, visitor)
    await sessions.end(session, request.cookies.get(sessions.COOKIE))
    response = page(request, "signin.html", user=None, message="You are signed out.")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
