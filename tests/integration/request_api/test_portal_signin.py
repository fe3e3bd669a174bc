"""The portal's sign-in, session and sign-out, against request-api on PostgreSQL and a
test issuer whose token endpoint answers the codes a test registers. What the browser
tests cannot see: the cookie's attributes, the PKCE verifier sent, the database holding
only a hash, a callback with another state or an ID token for another nonce refused,
session fixation, sign-out server-side and the absolute timeout (on a hand-moved clock).

httpx's cookie jar would not send a `Secure` cookie over http, so cookies are carried by
hand here (`Cookie:` headers) — which is also what lets a test replay an old one."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from elevate_core.clock import ManualClock
from elevate_request_api.main import SPEC
from elevate_request_api.portal import sessions
from elevate_request_api.portal.models import PortalSession
from sqlalchemy import select

from tests.harness import database
from tests.integration.request_api.conftest import Api
from tests.integration.request_api.portal_client import CSRF, begin, cookies_of, sign_in


async def test_sign_in_runs_the_code_flow_with_pkce_and_a_server_side_session(
    api: Api,
) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        query, _ = await begin(client)
        assert query["client_id"] == "elevate-portal"
        assert query["redirect_uri"] == f"{api.url}/callback"
        assert query["code_challenge_method"] == "S256"
        assert query["response_type"] == "code"
        assert "openid" in query["scope"].split()
        assert len(query["state"]) >= 32
        assert len(query["nonce"]) >= 32

        signed_in = await sign_in(api, client)
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/requests"
        sent = api.issuer.redeemed[-1]
        assert sent["grant_type"] == "authorization_code"
        assert sent["redirect_uri"] == f"{api.url}/callback"
        assert sent["client_id"] == "elevate-portal"

        cookie = cookies_of(signed_in)[sessions.COOKIE]
        assert cookie["httponly"] is True
        assert cookie["secure"] is True  # outside dev
        assert cookie["samesite"].lower() == "lax"
        assert cookie["path"] == "/"
        mine = await client.get(
            "/requests", headers={"Cookie": f"{sessions.COOKIE}={cookie.value}"}
        )
        assert mine.status_code == 200, mine.text
        assert "Alice" in mine.text

    async with database(api.settings.database_url, SPEC.migrations) as db, db.sessions() as s:
        stored = (await s.execute(select(PortalSession.id_hash))).scalars().all()
    assert sessions.digest(cookie.value) in stored
    assert cookie.value not in stored  # a read of the table signs nobody in


async def test_the_verifier_sent_matches_the_challenge_of_the_same_sign_in(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        query, login_cookie = await begin(client)
        code = uuid.uuid4().hex
        api.issuer.codes[code] = {"user": "alice", "nonce": query["nonce"]}
        await client.get(
            "/callback",
            params={"code": code, "state": query["state"]},
            headers={"Cookie": f"{sessions.LOGIN_COOKIE}={login_cookie}"},
        )
    verifier = api.issuer.redeemed[-1]["code_verifier"]
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert digest.rstrip(b"=").decode() == query["code_challenge"]


async def test_a_callback_not_started_in_this_browser_is_refused(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        query, login_cookie = await begin(client)
        other, _ = await begin(client)
        code = uuid.uuid4().hex
        api.issuer.codes[code] = {"user": "alice", "nonce": query["nonce"]}
        cases = [
            {},  # no login cookie: a link someone else sent (login CSRF)
            {"Cookie": f"{sessions.LOGIN_COOKIE}={other['state']}"},  # another sign-in's
        ]
        for headers in cases:
            refused = await client.get(
                "/callback", params={"code": code, "state": query["state"]}, headers=headers
            )
            assert refused.status_code == 400, refused.text
            assert sessions.COOKIE not in cookies_of(refused)
        # and a state is good once
        good = {"Cookie": f"{sessions.LOGIN_COOKIE}={login_cookie}"}
        first = await client.get(
            "/callback", params={"code": code, "state": query["state"]}, headers=good
        )
        assert first.status_code == 303, first.text
        api.issuer.codes[code] = {"user": "alice", "nonce": query["nonce"]}
        again = await client.get(
            "/callback", params={"code": code, "state": query["state"]}, headers=good
        )
        assert again.status_code == 400, again.text
        assert sessions.COOKIE not in cookies_of(again)


async def test_an_id_token_for_another_sign_in_is_refused(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        for claims in ({"nonce": "another-sign-in"}, {"nonce": None}, {"aud": "another-app"}):
            query, login_cookie = await begin(client)
            code = uuid.uuid4().hex
            api.issuer.codes[code] = {"user": "alice", "nonce": query["nonce"], **claims}
            refused = await client.get(
                "/callback",
                params={"code": code, "state": query["state"]},
                headers={"Cookie": f"{sessions.LOGIN_COOKIE}={login_cookie}"},
            )
            assert refused.status_code == 400, (claims, refused.text)
            assert sessions.COOKIE not in cookies_of(refused), claims


async def test_signing_out_ends_the_session_on_the_server(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        cookie = cookies_of(await sign_in(api, client))[sessions.COOKIE].value
        headers = {"Cookie": f"{sessions.COOKIE}={cookie}"}
        page = await client.get("/requests", headers=headers)
        match = CSRF.search(page.text)
        assert match, page.text
        out = await client.post("/logout", data={"csrf": match.group(1)}, headers=headers)
        assert out.status_code == 200, out.text
        # the old cookie, replayed: nothing
        replayed = await client.get("/requests", headers=headers)
        assert replayed.status_code == 303
        assert replayed.headers["location"].startswith("/login")


async def test_a_new_sign_in_replaces_the_browsers_old_session(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        old = cookies_of(await sign_in(api, client))[sessions.COOKIE].value
        query, login_cookie = await begin(client)
        code = uuid.uuid4().hex
        api.issuer.codes[code] = {"user": "alice", "nonce": query["nonce"]}
        both = f"{sessions.LOGIN_COOKIE}={login_cookie}; {sessions.COOKIE}={old}"
        new = await client.get(
            "/callback", params={"code": code, "state": query["state"]}, headers={"Cookie": both}
        )
        assert new.status_code == 303
        assert cookies_of(new)[sessions.COOKIE].value != old
        stale = await client.get("/requests", headers={"Cookie": f"{sessions.COOKIE}={old}"})
        assert stale.status_code == 303  # a session someone planted does not survive


async def test_a_session_ends_at_its_absolute_timeout_however_busy(
    start_api: Callable[..., Any], pg_url: str
) -> None:
    clock = ManualClock(datetime.now(UTC))
    api: Api = await start_api(
        pg_url,
        clock=clock,
        portal_idle_timeout_seconds=3600,
        portal_absolute_timeout_seconds=600,
    )
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        cookie = cookies_of(await sign_in(api, client))[sessions.COOKIE].value
        headers = {"Cookie": f"{sessions.COOKIE}={cookie}"}
        for _ in range(4):  # in use all along: the idle timeout never comes
            clock.advance(timedelta(seconds=140))
            assert (await client.get("/requests", headers=headers)).status_code == 200
        clock.advance(timedelta(seconds=50))  # 610 s after sign-in
        over = await client.get("/requests", headers=headers)
        assert over.status_code == 303
        assert over.headers["location"] == "/login?next=/requests"
