"""Who is signed in to the portal: the session cookie's server-side session, and the
Identity Store user its key finds now (a user gone from the directory is signed out)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from elevate_core.directory.errors import DirectoryError, UserNotFoundError
from elevate_core.directory.models import User
from fastapi import Depends, Request

from elevate_request_api import service
from elevate_request_api.deps import AppState, DbSession
from elevate_request_api.domain import DirectoryUnavailableError, RequestNotFoundError
from elevate_request_api.portal import forms, sessions
from elevate_request_api.portal.sessions import Live, Timeouts


class SignInRequired(Exception):  # a redirect, not an error to report
    """No valid portal session: the browser is sent to sign in (then back to `next`)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path

    @property
    def location(self) -> str:
        return f"/login?next={quote(self.next_path, safe='/')}"


class CsrfRefused(Exception):  # answered with a 403 page
    """A form post without this session's CSRF token."""


class NotAForm(Exception):  # answered with a 415 page
    """A post whose body is not a form the portal sends."""


def timeouts(state: AppState) -> Timeouts:
    s = state.settings
    return Timeouts(
        idle=timedelta(seconds=s.portal_idle_timeout_seconds),
        absolute=timedelta(seconds=s.portal_absolute_timeout_seconds),
    )


@dataclass(frozen=True, slots=True)
class Visitor:
    live: Live
    user: User
    roles: tuple[str, ...]  # what the navigation offers (each route checks for itself)

    @property
    def csrf(self) -> str:
        return self.live.csrf_token


def parse_request_id(raw: str) -> uuid.UUID:
    """A request id from a path: not one (any text) is a request that does not exist."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise RequestNotFoundError(f"no request {raw[:64]}") from None


def _back_to(request: Request) -> str:
    """The page to return to after signing in: this one, if it is a page (not a post, a
    fragment or a stream that a script asked for)."""
    path = request.url.path
    fragment = path.endswith(("/panel", "/events")) or path == "/request/accounts"
    if request.method != "GET" or fragment:
        return "/requests"
    return f"{path}?{request.url.query}" if request.url.query else path


async def current_session(request: Request, state: AppState, session: DbSession) -> Live | None:
    """The browser's portal session, if it has a valid one."""
    return await sessions.load(
        session,
        request.cookies.get(sessions.COOKIE),
        timeouts=timeouts(state),
        now=state.clock.now(),
    )


async def get_visitor(request: Request, state: AppState, session: DbSession) -> Visitor:
    live = await current_session(request, state, session)
    next_path = _back_to(request)
    if live is None:
        raise SignInRequired(next_path)
    try:
        user = await state.access.directory.find_user(live.key)
    except UserNotFoundError:
        await sessions.end(session, request.cookies.get(sessions.COOKIE))
        raise SignInRequired(next_path) from None
    except DirectoryError as exc:
        raise DirectoryUnavailableError("the identity directory is unavailable; try again") from exc
    if user.user_id != live.user_id:  # the key now finds someone else: not this session
        await sessions.end(session, request.cookies.get(sessions.COOKIE))
        raise SignInRequired(next_path)
    visitor = Visitor(live, user, tuple(service.roles(state.access.policy, user)))
    request.state.portal_visitor = visitor  # for the error pages' navigation
    return visitor


async def read_form(request: Request, visitor: Visitor) -> dict[str, str]:
    """The posted form, once its CSRF token is this session's (else nothing is done)."""
    try:
        fields = forms.parse(await request.body(), request.headers.get("content-type", ""))
    except forms.FormError as exc:
        raise NotAForm(str(exc)) from None
    if not visitor.live.csrf_ok(fields.get("csrf")):
        raise CsrfRefused
    return fields


SignedIn = Annotated[Visitor, Depends(get_visitor)]
