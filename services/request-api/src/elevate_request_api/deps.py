"""FastAPI dependencies as Annotated aliases (`CurrentUser`, `CurrentClaims`, `DbSession`,
`AppState`), and the middleware that checks the bearer token before any body is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from elevate_core.access import AccessControl
from elevate_core.app import ServiceContext
from elevate_core.clock import Clock
from elevate_core.directory.errors import DirectoryError, UserNotFoundError
from elevate_core.directory.models import User
from elevate_core.edge import send_problem
from elevate_core.outbox import Outbox
from elevate_core.problems import PROBLEM_TYPE, Problem
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Receive, Scope, Send

from elevate_request_api.auth import AuthError, Claims, IdentityMapping, TokenVerifier
from elevate_request_api.portal.signin import OidcClient
from elevate_request_api.settings import RequestApiSettings
from elevate_request_api.stream import StreamSlots

_bearer = HTTPBearer(auto_error=False, description="OIDC bearer JWT")
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
INVALID_TOKEN = PROBLEM_TYPE + "invalid-token"
UNKNOWN_USER = PROBLEM_TYPE + "unknown-user"
DIRECTORY_UNAVAILABLE = PROBLEM_TYPE + "directory-unavailable"


@dataclass
class ApiState:
    ctx: ServiceContext
    settings: RequestApiSettings
    access: AccessControl
    verifier: TokenVerifier
    portal: OidcClient
    identity: IdentityMapping
    outbox: Outbox
    clock: Clock
    streams: StreamSlots


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


class BearerAuth:
    """Verify the bearer token of every /v1 request before the app reads its body (FastAPI
    decodes bodies before it solves dependencies): a caller without a good token gets
    its 401 without one byte of its body parsed. The claims go on to `get_claims`."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/v1", document: bool = True) -> None:
        self.app = app
        self.prefix = prefix
        self.document = document  # guard /openapi.json as well

    def _guards(self, path: str) -> bool:
        if self.document and path == "/openapi.json":
            return True
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guards(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        state: ApiState = scope["app"].state.api
        try:
            claims = await state.verifier.verify(_bearer_token(scope))
        except AuthError as exc:
            await send_problem(
                send,
                scope,
                401,
                title="Unauthorized",
                detail=str(exc),
                type_=INVALID_TOKEN,
                headers=_CHALLENGE,
            )
            return
        scope.setdefault("state", {})["claims"] = claims
        await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> str:
    raw: bytes = dict(scope.get("headers", [])).get(b"authorization", b"")
    header = raw.decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("a bearer token is required")
    return token.strip()


async def get_claims(
    request: Request,
    # Declared for the OpenAPI security scheme; BearerAuth has already checked it.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    claims = getattr(request.state, "claims", None)
    if not isinstance(claims, Claims):  # a route outside BearerAuth's prefix
        raise Problem(401, "a bearer token is required", type_=INVALID_TOKEN, headers=_CHALLENGE)
    return claims


CurrentClaims = Annotated[Claims, Depends(get_claims)]


async def get_current_user(state: AppState, claims: CurrentClaims) -> User:
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
