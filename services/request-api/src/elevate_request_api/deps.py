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

from elevate_request_api.auth import AuthError, TokenVerifier
from elevate_request_api.settings import RequestApiSettings

_bearer = HTTPBearer(auto_error=False, description="OIDC bearer JWT")
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass
class ApiState:
    ctx: ServiceContext
    settings: RequestApiSettings
    access: AccessControl
    verifier: TokenVerifier
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
        raise Problem(401, "a bearer token is required", headers=_CHALLENGE)
    try:
        claims = await state.verifier.verify(credentials.credentials)
    except AuthError as exc:
        raise Problem(401, str(exc), headers=_CHALLENGE) from None
    try:
        return await state.access.directory.get_user(claims.user_name)
    except UserNotFoundError:
        raise Problem(403, f"{claims.user_name!r} is not an Identity Center user") from None
    except DirectoryError as exc:
        raise Problem(
            503, "the identity directory is unavailable; try again", headers={"Retry-After": "5"}
        ) from exc


CurrentUser = Annotated[User, Depends(get_current_user)]
