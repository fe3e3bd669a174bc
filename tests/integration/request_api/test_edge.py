"""request-api's edge against hostile input (issue 19, items 3-5): every refusal is a
problem with its own `type`, the token is checked before a body is read, bodies are
capped, text is normalised and control characters refused, the probes and 403s say
nothing of what the caller may not see, and a status stream ends with its token."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from elevate_core.clock import ManualClock
from elevate_core.notify import wake
from elevate_request_api.store import STATUS_CHANNEL

from tests.harness import eventually
from tests.integration.request_api.conftest import Api
from tests.integration.request_api.test_requests import prod_admin

PROBLEM = "urn:elevate:problem:"


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _fullwidth(ascii_text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in ascii_text)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug, body
    return body


async def test_a_list_alg_in_the_token_header_is_a_401(api: Api) -> None:
    _header, payload, signature = api.issuer.token("alice").split(".")
    forged = f"{_b64({'alg': ['RS256'], 'typ': 'JWT'})}.{payload}.{signature}"
    async with api.client(user=None) as client:
        response = await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "invalid-token")


async def test_without_a_good_token_no_body_is_parsed(api: Api) -> None:
    # A parsed body would answer 422 (malformed) or 413 (too large): 401 comes first.
    async with api.client(user=None) as client:
        malformed = await client.post(
            "/v1/requests", content=b"{not json", headers={"content-type": "application/json"}
        )
        huge = await client.post("/v1/requests", json={"justification": "x" * 500_000})
        forged = await client.post(
            "/v1/requests", content=b"{not json", headers={"authorization": "Bearer a.b.c"}
        )
    for response in (malformed, huge, forged):
        assert_problem(response, 401, "invalid-token")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_body_over_the_cap_is_413_before_it_is_parsed(api: Api) -> None:
    cap = api.settings.max_body_bytes

    async def chunked() -> AsyncIterator[bytes]:
        yield b"{not json, and never read to its end"
        for _ in range(cap // 1000 + 1):
            yield b"x" * 1000

    async with api.client("alice") as alice:
        declared = await alice.post("/v1/requests", json=prod_admin(api, justification="x" * cap))
        streamed = await alice.post(
            "/v1/requests", content=chunked(), headers={"content-type": "application/json"}
        )
        assert (await alice.get("/v1/requests")).json()["items"] == []
    assert_problem(declared, 413, "body-too-large")
    assert_problem(streamed, 413, "body-too-large")


@pytest.mark.parametrize(
    ("overrides", "slug"),
    [
        ({"justification": "OPS-1 restart\x00"}, "control-character"),  # PostgreSQL: 500
        ({"justification": "\u200b"}, "control-character"),  # zero-width space
        ({"justification": "OPS-1 \u202etrats\u202c"}, "control-character"),  # bidi override
        ({"justification": "1234 !!! ---"}, "justification-without-letters"),
        ({"justification": "   "}, "justification-without-letters"),
        ({"permission_set": "Administrator\u200dAccess"}, "control-character"),
        ({"ticket": "OPS-1\x1b[2J"}, "control-character"),
        ({"ticket": "OPS-1\nOPS-2"}, "control-character"),  # one line, unlike free text
        ({"justification": "restart\n\u202e"}, "control-character"),
        ({"start": "2030-01-01T10:00:00"}, "naive-datetime"),
        ({"start": "0001-01-01T00:00:00+05:00"}, "datetime-out-of-range"),
    ],
)
async def test_hostile_text_is_refused_with_its_own_type(
    api: Api, overrides: dict[str, Any], slug: str
) -> None:
    async with api.client("alice") as alice:
        response = await alice.post("/v1/requests", json=prod_admin(api, **overrides))
        assert_problem(response, 422, slug)
        assert (await alice.get("/v1/requests")).json()["items"] == []


async def test_a_comment_with_control_characters_is_refused(api: Api) -> None:
    async with api.client("grace") as grace:
        response = await grace.post(
            f"/v1/requests/{uuid.uuid4()}/approve", json={"comment": "ok\x00"}
        )
    assert_problem(response, 422, "control-character")


async def test_a_justification_may_be_several_lines(api: Api) -> None:
    body = prod_admin(api, justification="Incident OPS-7:\r\nrestart the payments API\rnow")
    async with api.client("alice") as alice:
        created = await alice.post("/v1/requests", json=body)
        assert created.status_code == 202, created.text
        stored = (await alice.get(f"/v1/requests/{created.json()['id']}")).json()
    assert stored["justification"] == "Incident OPS-7:\nrestart the payments API\nnow"


async def test_text_is_stored_normalised(api: Api) -> None:
    # Full-width forms (NFKC): the ticket matches the policy's ^[A-Z]+-[0-9]+$ once
    # normalised, and is stored as what it looks like.
    wide = _fullwidth("OPS-12")
    body = prod_admin(api, ticket=f" {wide} ", justification=f"{wide}: restart \ufb01les")
    async with api.client("alice") as alice:
        created = await alice.post("/v1/requests", json=body)
        assert created.status_code == 202, created.text
        stored = (await alice.get(f"/v1/requests/{created.json()['id']}")).json()
    assert stored["ticket"] == "OPS-12"
    assert stored["justification"] == "OPS-12: restart files"


@pytest.mark.parametrize(
    ("params", "slug"),
    [
        ({"created_after": "2026-01-01T00:00:00"}, "naive-datetime"),
        ({"created_before": "2026-01-01T00:00:00"}, "naive-datetime"),
        ({"created_after": "0001-01-01T00:00:00+05:00"}, "datetime-out-of-range"),
        ({"created_before": "9999-12-31T23:00:00-05:00"}, "datetime-out-of-range"),
        (
            {"cursor": base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.uuid4()}".encode())},
            "invalid-cursor",
        ),
        (
            {
                "cursor": base64.urlsafe_b64encode(
                    f"0001-01-01T00:00:00+05:00|{uuid.uuid4()}".encode()
                )
            },
            "invalid-cursor",
        ),
        ({"cursor": "%%% not base64"}, "invalid-cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe")}, "invalid-cursor"),
    ],
)
async def test_list_filters_and_cursors_need_a_time_zone(
    api: Api, params: dict[str, Any], slug: str
) -> None:
    async with api.client("alice") as alice:
        response = await alice.get("/v1/requests", params=params)
    assert_problem(response, 422, slug)


async def test_aware_list_filters_work(api: Api) -> None:
    async with api.client("alice") as alice:
        created = await alice.post("/v1/requests", json=prod_admin(api))
        assert created.status_code == 202, created.text
        after = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        listed = await alice.get("/v1/requests", params={"created_after": after})
    assert [r["id"] for r in listed.json()["items"]] == [created.json()["id"]]


async def test_every_answer_carries_the_security_headers(api: Api) -> None:
    async with api.client("alice") as alice:
        responses = [await alice.get("/v1/me"), await alice.get("/healthz")]
    async with api.client(user=None) as anonymous:
        responses.append(await anonymous.get("/v1/me"))  # refused by the token check
    for response in responses:
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert "strict-transport-security" in response.headers  # test mode is not dev


async def test_probes_tell_anonymous_callers_only_their_status(api: Api) -> None:
    async with api.client(user=None) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_not_eligible_says_the_same_for_unknown_and_unseen_accounts(api: Api) -> None:
    unknown = prod_admin(api, account_id="999999999999")
    async with api.client("erin") as erin:
        unseen = await erin.post("/v1/requests", json=prod_admin(api))
        missing = await erin.post("/v1/requests", json=unknown)
        no_set = await erin.post("/v1/requests", json=prod_admin(api, permission_set="NoSuch"))
    for response in (unseen, missing, no_set):
        body = assert_problem(response, 403, "not-eligible")
        assert "payments-prod" not in body["detail"]  # the account's name is not erin's to see
    account = api.seeded.account_ids["payments-prod"]
    assert unseen.json()["detail"].replace(account, "999999999999") == missing.json()["detail"]


async def test_a_stream_ends_when_its_token_expires_and_streams_are_capped(
    start_api: Callable[..., Any], pg_url: str
) -> None:
    clock = ManualClock(datetime.now(UTC))
    api: Api = await start_api(pg_url, clock=clock, max_streams_per_user=1)
    async with api.client("alice") as alice:
        rid = (await alice.post("/v1/requests", json=prod_admin(api))).json()["id"]
    expires = int(time.time()) + 600
    token = api.issuer.token("alice", exp=expires)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        async with client.stream("GET", f"/v1/requests/{rid}/stream", headers=headers) as first:
            assert first.status_code == 200
            lines = first.aiter_lines()
            assert await anext(lines) == "id: 1"
            assert await anext(lines) == "event: status"
            async with client.stream(
                "GET", f"/v1/requests/{rid}/stream", headers=headers
            ) as second:
                assert second.status_code == 429  # before reading: a stream would not end
                await second.aread()
                assert_problem(second, 429, "too-many-streams")
            clock.set(datetime.fromtimestamp(expires, UTC) + timedelta(seconds=1))
            wake(f"{STATUS_CHANNEL}:{rid}")  # the stream re-checks at once
            rest: list[str] = []
            async for line in lines:  # to its end; a keepalive means it outlived the token
                rest.append(line)
                if line.startswith(": keepalive"):
                    break
        assert [line for line in rest if line.startswith(("event:", ":"))] == ["event: expired"]

        async def slot_given_back() -> bool:
            again = await client.get(f"/v1/requests/{rid}/stream", headers=headers)
            return again.status_code == 200 and "event: expired" in again.text

        await eventually(slot_given_back, what="the ended stream's slot given back")
