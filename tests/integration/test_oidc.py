"""The local OIDC provider: a real authorization-code flow with PKCE, verified ID tokens."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from elevate_local import runs
from elevate_local.oidc import (
    OidcProvider,
    fetch_token,
    main,
    register_users,
    seeded_user_claims,
    start_oidc_provider,
    subject_of,
)
from elevate_local.ports import free_port, port_open, wait_for_port
from elevate_local.seed_data import external_id

pytestmark = pytest.mark.integration

SEEDED = ("alice", "erin", "bob", "frank", "grace", "carol", "dave")


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    provider = start_oidc_provider(free_port())
    register_users(provider.issuer, seeded_user_claims())
    yield provider
    provider.stop()


def _verify(issuer: str, token: str, audience: str) -> dict[str, object]:
    """Verify like a resource server: keys from the JWKS named by discovery."""
    discovery = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == issuer
    jwks = jwt.PyJWKSet.from_dict(httpx.get(discovery["jwks_uri"]).json())
    kid = jwt.get_unverified_header(token).get("kid")
    # The provider's ID tokens carry no kid; its JWKS holds exactly one key.
    keys = [k for k in jwks.keys if kid is None or k.key_id == kid]
    assert len(keys) == 1
    claims: dict[str, object] = jwt.decode(
        token,
        keys[0],
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    return claims


def test_seeded_users_have_identity_store_names_and_immutable_subjects() -> None:
    claims = seeded_user_claims()
    assert tuple(claims) == tuple(subject_of(user) for user in SEEDED)
    alice = claims[subject_of("alice")]
    assert alice["preferred_username"] == "alice"
    assert alice["email"] == "alice@elevate.example"
    # The subject is the ExternalId SCIM would have written, not the (mutable) name.
    assert subject_of("alice") == external_id("alice") != "alice"
    assert len(set(claims)) == len(SEEDED)


def test_alice_logs_in_with_pkce(provider: OidcProvider) -> None:
    tokens = fetch_token(provider.issuer, subject_of("alice"))
    assert tokens.expires_in == 3600
    assert tokens.token_type.lower() == "bearer"
    claims = _verify(provider.issuer, tokens.id_token, audience="elevate-portal")
    assert claims["preferred_username"] == "alice"
    assert claims["sub"] == external_id("alice")
    assert claims["email"] == "alice@elevate.example"
    assert claims["name"] == "Alice Archer"
    assert claims["aud"] == ["elevate-portal"]
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(provider.issuer, tokens.id_token, audience="someone-else")


def test_access_token_is_opaque_but_works_at_userinfo(provider: OidcProvider) -> None:
    tokens = fetch_token(provider.issuer, subject_of("carol"))
    with pytest.raises(jwt.DecodeError):
        jwt.get_unverified_header(tokens.access_token)
    userinfo = httpx.get(
        f"{provider.issuer}/userinfo",
        headers={"Authorization": f"Bearer {tokens.access_token}"},
    )
    assert userinfo.status_code == 200
    assert userinfo.json()["preferred_username"] == "carol"


def test_every_seeded_user_and_client_id(provider: OidcProvider) -> None:
    for user in SEEDED:
        tokens = fetch_token(provider.issuer, subject_of(user), client_id="elevate-cli")
        claims = _verify(provider.issuer, tokens.id_token, audience="elevate-cli")
        assert claims["preferred_username"] == user


def test_register_users_changes_claims(provider: OidcProvider) -> None:
    register_users(provider.issuer, {"zed": {"preferred_username": "zed-renamed"}})
    claims = _verify(
        provider.issuer, fetch_token(provider.issuer, "zed").id_token, "elevate-portal"
    )
    assert claims["preferred_username"] == "zed-renamed"
    register_users(provider.issuer, {"zed": {"preferred_username": "zed"}})
    claims = _verify(
        provider.issuer, fetch_token(provider.issuer, "zed").id_token, "elevate-portal"
    )
    assert claims["preferred_username"] == "zed"


def test_authorization_code_is_single_use(provider: OidcProvider) -> None:
    # Drive the flow by hand up to the code, then redeem it twice.
    params = {
        "response_type": "code",
        "client_id": "elevate-portal",
        "redirect_uri": "http://127.0.0.1/elevate/callback",
        "scope": "openid profile email",
        "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    login = httpx.post(f"{provider.issuer}/oauth2/authorize", params=params, data={"sub": "bob"})
    assert login.status_code == 302
    code = httpx.URL(login.headers["location"]).params["code"]
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "client_id": "elevate-portal",
        "client_secret": "x",
    }
    first = httpx.post(f"{provider.issuer}/oauth2/token", data=body)
    assert first.status_code == 200
    second = httpx.post(f"{provider.issuer}/oauth2/token", data=body)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"


def test_unreachable_issuer_fails() -> None:
    with pytest.raises(httpx.ConnectError):
        fetch_token(f"http://127.0.0.1:{free_port()}", "alice")


def test_stop_frees_the_port() -> None:
    port = free_port()
    provider = start_oidc_provider(port)
    assert port_open(port)
    provider.stop()
    assert not port_open(port)


def test_cli_serve_and_token() -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    server = runs.spawn(
        [sys.executable, "-m", "elevate_local.oidc", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30, what="oidc serve")
        assert server.stdout is not None
        assert issuer in server.stdout.readline()  # printed once users are registered
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "elevate_local.oidc",
                "token",
                "--issuer",
                issuer,
                "--user",
                "dave",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        token = result.stdout.strip()
        claims = _verify(issuer, token, audience="elevate-portal")
        assert claims["preferred_username"] == "dave"
        assert claims["name"] == "Dave Dixon"
        # The login page offers the seeded users as one-click buttons.
        page = httpx.get(
            f"{issuer}/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": "elevate-portal",
                "redirect_uri": "http://127.0.0.1/cb",
                "scope": "openid",  # without a scope this provider answers 500
            },
        )
        assert f'value="{subject_of("grace")}"' in page.text
    finally:
        server.terminate()
        assert server.wait(timeout=15) == 0
    deadline = time.monotonic() + 5
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_open(port)


def test_cli_token_reports_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--issuer", f"http://127.0.0.1:{free_port()}", "--user", "x"]) == 1
    assert "error" in capsys.readouterr().err
