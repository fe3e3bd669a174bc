"""Signing a test user in to the portal over HTTP, as a browser would, against the test
issuer (its token endpoint answers the codes registered here). httpx's cookie jar would
not send a `Secure` cookie over http, so cookies travel as explicit `Cookie:` headers."""

from __future__ import annotations

import re
import uuid
from http.cookies import Morsel, SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
from elevate_request_api.portal import sessions

from tests.integration.request_api.conftest import Api

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def cookies_of(response: httpx.Response) -> dict[str, Morsel[str]]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return {name: morsel for name, morsel in jar.items()}


async def begin(client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """GET /login: the authorize URL's query, and the login cookie."""
    login = await client.get("/login", params={"next": "/requests"})
    assert login.status_code == 303, login.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(login.headers["location"]).query).items()}
    return query, cookies_of(login)[sessions.LOGIN_COOKIE].value


async def sign_in(api: Api, client: httpx.AsyncClient, user: str = "alice") -> httpx.Response:
    query, login_cookie = await begin(client)
    code = uuid.uuid4().hex
    api.issuer.codes[code] = {"user": user, "nonce": query["nonce"]}
    return await client.get(
        "/callback",
        params={"code": code, "state": query["state"]},
        headers={"Cookie": f"{sessions.LOGIN_COOKIE}={login_cookie}"},
    )


async def session_of(api: Api, client: httpx.AsyncClient, user: str) -> tuple[str, str]:
    """A signed-in session of `user`: (its cookie header, its CSRF token)."""
    signed_in = await sign_in(api, client, user)
    assert signed_in.status_code == 303, signed_in.text
    cookie = f"{sessions.COOKIE}={cookies_of(signed_in)[sessions.COOKIE].value}"
    mine = await client.get("/requests", headers={"Cookie": cookie})
    found = CSRF.search(mine.text)
    assert found, mine.text
    return cookie, found.group(1)
