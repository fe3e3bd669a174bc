"""Bearer JWTs: every attack of the issue is a 401 problem document; good tokens work,
also from the real local OIDC provider (authorization code + PKCE)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.oidc import (
    fetch_token,
    register_users,
    seeded_user_claims,
    start_oidc_provider,
    subject_of,
)
from elevate_local.ports import free_port
from elevate_local.seed_data import external_id
from elevate_request_api.auth import AuthError, JwksCache, TokenVerifier

from tests.integration.request_api.conftest import Api, Issuer


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none(issuer: Issuer) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer.url,
        "aud": "elevate-portal",
        "preferred_username": "alice",
        "exp": now + 600,
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def hs256_with_public_key(issuer: Issuer) -> str:
    """The classic key-confusion forgery: HMAC keyed with the RSA public key."""
    public_pem = (
        issuer.keys[issuer.current]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    claims = {
        "iss": issuer.url,
        "aud": "elevate-portal",
        "preferred_username": "alice",
        "exp": now + 600,
    }
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": issuer.current})
    payload = _b64(claims)
    import hashlib
    import hmac

    sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def tampered(issuer: Issuer) -> str:
    header, payload, sig = issuer.token("erin").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = external_id("dave")  # privilege escalation attempt
    return f"{header}.{_b64(claims)}.{sig}"


def unknown_key(issuer: Issuer) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode(
        {
            "iss": issuer.url,
            "aud": "elevate-portal",
            "preferred_username": "alice",
            "exp": now + 600,
        },
        stranger,
        algorithm="RS256",
        headers={"kid": "not-a-known-kid"},
    )


# each attack, and the reason the 401 gives for it
ATTACKS: dict[str, tuple[Callable[[Issuer], str], str]] = {
    "alg none": (alg_none, "token algorithm 'none' is not accepted"),
    "HS256 keyed with the public key": (
        hs256_with_public_key,
        "token algorithm 'HS256' is not accepted",
    ),
    "expired": (
        lambda i: i.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "token expired",
    ),
    "not yet valid": (lambda i: i.token(nbf=int(time.time()) + 3600), "token not yet valid"),
    "wrong issuer": (
        lambda i: i.token(iss="https://evil.example"),
        "token from an unexpected issuer",
    ),
    "wrong audience": (lambda i: i.token(aud="another-app"), "token for another audience"),
    "no expiry": (lambda i: i.token(exp=None), 'invalid token: Token is missing the "exp" claim'),
    "tampered claims": (tampered, "token signature does not verify"),
    "signed by an unknown key": (unknown_key, "token signed with an unknown key"),
    "garbage": (lambda i: "not.a.jwt", "malformed token"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attacks_are_refused_with_problem_details(api: Api, attack: str) -> None:
    forge, reason = ATTACKS[attack]
    token = forge(api.issuer)
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == "urn:elevate:problem:invalid-token"
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert body["instance"] == "/v1/me"
    assert body["detail"] == reason


async def test_unreachable_issuer_refuses_tokens_until_it_is_back(api: Api) -> None:
    dead = JwksCache(f"http://127.0.0.1:{free_port()}")
    verifier = TokenVerifier(
        issuer=api.issuer.url, audience="elevate-portal", user_claim="sub", jwks=dead
    )
    try:
        with pytest.raises(AuthError, match="cannot verify tokens right now"):
            await verifier.verify(api.issuer.token("alice"))
    finally:
        await dead.aclose()


async def test_missing_token_is_401(api: Api) -> None:
    async with api.client(user=None) as client:
        response = await client.get("/v1/eligibility")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_probes_need_no_token(api: Api) -> None:
    async with api.client(user=None) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200


async def test_valid_token_resolves_the_identity_store_user(api: Api) -> None:
    async with api.client("alice") as client:
        me = (await client.get("/v1/me")).json()
    assert me["user_name"] == "alice"
    assert me["user_id"] == api.seeded.user_ids["alice"]
    assert set(me["groups"]) >= {"engineers", "sre"}
    assert me["roles"] == ["requester"]
    async with api.client("dave") as client:
        assert "admin" in (await client.get("/v1/me")).json()["roles"]


async def test_rotated_key_is_fetched_on_unknown_kid(api: Api) -> None:
    async with api.client("alice") as client:
        assert (await client.get("/v1/me")).status_code == 200  # keys now cached
    new_kid = api.issuer.rotate()
    token = api.issuer.token("alice", kid=new_kid)
    async with httpx.AsyncClient(base_url=api.url) as client:
        response = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


async def test_user_unknown_to_identity_store_is_403(api: Api) -> None:
    async with api.client("mallory") as client:
        response = await client.get("/v1/me")
    assert response.status_code == 403
    assert response.json()["type"] == "urn:elevate:problem:unknown-user"
    assert response.json()["detail"] == (
        f"no Identity Center user has the externalId {external_id('mallory')!r} "
        f"of {api.issuer.url!r}"
    )


async def _me(api: Api, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.url) as client:
        return await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


async def test_a_new_login_naming_an_approver_is_not_that_approver(api: Api) -> None:
    """Names, e-mail and display name are the user's to edit at many IdPs: only the
    immutable subject, bound to an Identity Store ExternalId, says who signed in."""
    impostor = api.issuer.token(
        sub="4b1d0000-new-login",
        preferred_username="bob",
        email="bob@elevate.example",
        name="Bob Baker",
        upn="bob",
    )
    response = await _me(api, impostor)
    assert response.status_code == 403, response.text
    assert "bob" not in response.text.lower()
    # bob's own subject is bob, whatever the other claims say
    renamed = api.issuer.token("bob", preferred_username="dave", email="dave@elevate.example")
    me = (await _me(api, renamed)).json()
    assert (me["user_name"], me["user_id"]) == ("bob", api.seeded.user_ids["bob"])
    assert "admin" not in me["roles"]


async def test_an_external_id_of_another_issuer_is_not_ours(
    api: Api, aws_proxy: AwsFaultProxy
) -> None:
    """ExternalIds are scoped by their Issuer: another IdP's subject for bob, presented
    by a token of our issuer, is nobody."""
    aws_proxy.external_ids.link("https://another-idp.example", "shared-subject-7", "bob")
    response = await _me(api, api.issuer.token(sub="shared-subject-7"))
    assert response.status_code == 403, response.text


async def test_another_mapping_matches_a_unique_attribute(
    start_api: Callable[..., Any], pg_url: str
) -> None:
    """An IdP whose immutable claim carries the Identity Store UserName (Identity Center's
    own directory): `userName` through GetUserId's unique-attribute lookup."""
    api: Api = await start_api(pg_url, oidc_user_claim="uid", oidc_user_attribute="userName")
    me = (await _me(api, api.issuer.token("erin", uid="erin"))).json()
    assert (me["user_name"], me["user_id"]) == ("erin", api.seeded.user_ids["erin"])
    # the ExternalId subject means nothing to this mapping
    assert (await _me(api, api.issuer.token("erin"))).status_code == 401  # no uid claim
    assert (await _me(api, api.issuer.token("erin", uid="nobody"))).status_code == 403


async def test_token_from_the_local_oidc_provider(
    start_api: Callable[..., Any], pg_url: str
) -> None:
    """Dev mode: the local provider's signed ID token (PKCE flow) is the bearer."""
    provider = start_oidc_provider(free_port())
    try:
        register_users(provider.issuer, seeded_user_claims())
        api: Api = await start_api(pg_url, oidc_issuer=provider.issuer)
        tokens = await asyncio.to_thread(fetch_token, provider.issuer, subject_of("grace"))
        response = await _me(api, tokens.id_token)
        assert response.status_code == 200, response.text
        assert response.json()["user_name"] == "grace"
        assert "approver" in response.json()["roles"]
        # A new login at the provider whose claims copy an approver's is not that approver.
        bob = seeded_user_claims()[subject_of("bob")]
        register_users(provider.issuer, {"impostor-0001": bob})
        tokens = await asyncio.to_thread(fetch_token, provider.issuer, "impostor-0001")
        assert (
            jwt.decode(tokens.id_token, options={"verify_signature": False})["preferred_username"]
            == "bob"
        )
        response = await _me(api, tokens.id_token)
        assert response.status_code == 403, response.text
    finally:
        provider.stop()


async def test_every_v1_endpoint_requires_a_token(api: Api) -> None:
    """Walks the OpenAPI document: no route under /v1 answers without a bearer token."""
    async with api.client() as signed_in:
        spec = (await signed_in.get("/openapi.json")).json()
    async with api.client(user=None) as client:
        assert (await client.get("/openapi.json")).status_code == 401
        assert spec["openapi"].startswith("3.1")
        checked = 0
        for path, operations in spec["paths"].items():
            if not path.startswith("/v1/"):
                continue
            concrete = path.replace("{request_id}", str(uuid.uuid4())).replace(
                "{decision}", "approve"
            )
            for method in operations:
                response = await client.request(method.upper(), concrete, json={})
                assert response.status_code == 401, (method, path, response.status_code)
                checked += 1
    assert checked >= 10
