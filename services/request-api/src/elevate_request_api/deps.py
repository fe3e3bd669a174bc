"""FastAPI dependencies as Annotated aliases: `CurrentUser`, `DbSession`, `AppState`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from elevate_core.access import AccessControl
from elevate_core.app import ServiceContext
from elevate_core.clock import Clock
from elevate_core.directory.errors import DirectoryError, UserNotFoundError
from elevate_core.directory.models import User
from elevate_core.outbox import Outbox
from elevate_core.problems import Problem
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api.auth import AuthError, IdentityMapping, TokenVerifier
from elevate_request_api.settings import RequestApiSettings

_bearer = HTTPBearer(auto_error=False, description="OIDC bearer JWT")
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
PROBLEM_TYPE = "urn:elevate:problem:"  # + a stable slug, per kind of refusal
INVALID_TOKEN = PROBLEM_TYPE + "invalid-token"
UNKNOWN_USER = PROBLEM_TYPE + "unknown-user"
DIRECTORY_UNAVAILABLE = PROBLEM_TYPE + "directory-unavailable"


@dataclass
class ApiState:
    ctx: ServiceContext
    settings: RequestApiSettings
    access: AccessControl
    verifier: TokenVerifier
    identity: IdentityMapping
    outbox: Outbox
    clock: Clock


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


AppState = Annotated[ApiState, Depends(get_state)]


async def get_session(state: AppState) -> AsyncIterator[AsyncSession]:
    async with state.ctx.db.transaction() as session:
        yield session


# scope="function": the transaction commits before the response is sent, so a 202
# always means the request (and its outbox event) is stored.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_current_user(
    state: AppState,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "a bearer token is required", type_=INVALID_TOKEN, headers=_CHALLENGE)
    try:
        claims = await state.verifier.verify(credentials.credentials)
    except AuthError as exc:
        raise Problem(401, str(exc), type_=INVALID_TOKEN, headers=_CHALLENGE) from None
    key = state.identity.key(claims)
    try:
        return await state.access.directory.find_user(key)
    except UserNotFoundError:
        # Only the bound claim decides who this is; the token's names are never a fallback.
        raise Problem(403, f"no Identity Center user has the {key}", type_=UNKNOWN_USER) from None
    except DirectoryError as exc:
        raise Problem(
            503,
            "the identity directory is unavailable; try again",
            type_=DIRECTORY_UNAVAILABLE,
            headers={"Retry-After": "5"},
        ) from exc


CurrentUser = Annotated[User, Depends(get_current_user)]
