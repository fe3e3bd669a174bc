"""`fetch_token`'s authorization-code flow against a scripted provider: every way the
provider can answer wrongly is refused with the step that went wrong."""

from __future__ import annotations

import functools
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from elevate_local import oidc

ISSUER = "http://idp.test"


class ScriptedProvider:
    """Answers like the local provider, except for the one `fault` it is given."""

    def __init__(self, fault: str | None = None) -> None:
        self.fault = fault
        self.nonce = ""
        self.token_form: dict[str, list[str]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, fault = request.url.path, self.fault
        if path == "/.well-known/openid-configuration":
            endpoints = {"authorization_endpoint": f"{ISSUER}/authorize"}
            return httpx.Response(200, json={**endpoints, "token_endpoint": f"{ISSUER}/token"})
        if path == "/authorize" and request.method == "GET":
            return httpx.Response(500 if fault == "form" else 200, text="<form>")
        if path == "/authorize":
            return self._login(request.url.params)
        assert path == "/token"
        self.token_form = parse_qs(request.content.decode())
        nonce = "replayed" if fault == "nonce" else self.nonce
        id_token = jwt.encode({"sub": "alice", "nonce": nonce}, "k" * 32, algorithm="HS256")
        return httpx.Response(
            200, json={"id_token": id_token, "access_token": "opaque", "expires_in": 3600}
        )

    def _login(self, params: httpx.QueryParams) -> httpx.Response:
        self.nonce = params["nonce"]
        if self.fault == "login":
            return httpx.Response(200, text="<form>wrong password</form>")
        back = "https://evil.example/cb" if self.fault == "elsewhere" else params["redirect_uri"]
        state = "forged" if self.fault == "state" else params["state"]
        query = "error=access_denied" if self.fault == "denied" else f"code=c-1&state={state}"
        return httpx.Response(302, headers={"location": f"{back}?{query}"})


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> ScriptedProvider:
    scripted = ScriptedProvider()
    client = functools.partial(httpx.Client, transport=httpx.MockTransport(scripted))
    monkeypatch.setattr(httpx, "Client", client)
    return scripted


def test_the_flow_redeems_the_code_with_its_verifier(provider: ScriptedProvider) -> None:
    tokens = oidc.fetch_token(ISSUER, "alice")
    assert tokens.access_token == "opaque"
    assert tokens.expires_in == 3600
    assert tokens.token_type == "Bearer"
    assert jwt.decode(tokens.id_token, options={"verify_signature": False})["sub"] == "alice"
    assert provider.token_form["code"] == ["c-1"]
    assert provider.token_form["grant_type"] == ["authorization_code"]
    assert len(provider.token_form["code_verifier"][0]) >= 43


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("form", "authorize failed: 500"),
        ("login", "login as 'alice' failed: 200"),
        ("elsewhere", "redirected to https://evil.example/cb"),
        ("denied", "authorization denied: access_denied"),
        ("state", "state mismatch in the authorization response"),
        ("nonce", "nonce mismatch in the ID token"),
    ],
)
def test_a_provider_answering_wrongly_is_refused(
    provider: ScriptedProvider, fault: str, message: str
) -> None:
    provider.fault = fault
    with pytest.raises(oidc.OidcError, match=message):
        oidc.fetch_token(ISSUER, "alice")
