"""The token checks of the running service: each refusal is its 401 problem, and the
settings reach the verifier (tests/unit/request_api/test_token_checks.py has every case)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.integration.request_api.conftest import Api


async def _detail(api: Api, token: str) -> str:
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:elevate:problem:invalid-token"
    detail: str = response.json()["detail"]
    return detail


async def test_each_new_check_is_a_401_problem(api: Api) -> None:
    now = int(time.time())
    issuer = api.issuer
    assert await _detail(api, issuer.token(sub=None)) == "token has no 'sub' claim"
    assert await _detail(api, issuer.token(iat=now - 60, exp=now + 13 * 3600)) == (
        "token lifetime exceeds the maximum of 43200 seconds"
    )
    assert await _detail(api, issuer.token(iat=None)) == (
        'invalid token: Token is missing the "iat" claim'
    )
    assert await _detail(api, issuer.token(iat=now + 3600, exp=now + 4000)) == (
        "token issued in the future"
    )
    assert await _detail(api, issuer.token(aud=["elevate-portal", "another-app"])) == (
        "token for several audiences, and its azp is not this one"
    )


async def test_token_settings_reach_the_verifier(
    start_api: Callable[..., Any], pg_url: str
) -> None:
    """Access tokens only (the default), and a shorter lifetime: the test issuer's ID
    tokens are refused for their type, and a 10-minute token for its lifetime."""
    strict: Api = await start_api(pg_url, oidc_token_types=["access_token"])
    assert await _detail(strict, strict.issuer.token()) == "token type 'JWT' is not accepted"
    short: Api = await start_api(pg_url, jwt_max_lifetime_seconds=300)
    assert await _detail(short, short.issuer.token()) == (
        "token lifetime exceeds the maximum of 300 seconds"
    )
