"""A real local OIDC provider (oidc-provider-mock 0.3.4) and a client for its
authorization-code flow with PKCE.

- `start_oidc_provider(port)` serves discovery, JWKS, authorize, token and userinfo on
  a background thread; `.issuer` is `http://<host>:<port>`. The provider derives `iss`
  from the request's Host header, so clients and Elevate must use that same URL (not
  `localhost` for a `127.0.0.1` issuer).
- `register_users(issuer, users)` sets each user's claims with the provider's own API
  (`PUT /users/{sub}`). A seeded user's `sub` is the GUID the Identity Store holds as
  their ExternalId for this issuer (`seed_data.external_id`, `subject_of`), as an IdP
  provisioning over SCIM would have written it; `preferred_username` is their UserName,
  plus `email`, `email_verified` and `name`; the claims reach the ID token when the scope
  is `openid profile email`.
- `fetch_token(issuer, user)` performs the genuine flow over HTTP: discovery, GET
  authorize (S256 code challenge, state, nonce), POST the login form with `sub`, take
  the code from the 302 to the loopback redirect URI (nothing needs to listen there),
  POST token with the code verifier.

Bearer tokens in dev: this provider's access tokens are opaque strings (only its own
userinfo endpoint understands them); its ID tokens are RS256-signed JWTs with
`aud` = the client id (a one-element list). Elevate's dev mode therefore accepts the
signed ID token as the bearer JWT, with audience = the client id (`elevate-portal`);
`make token USER=alice` prints one. Real IdPs issue JWT access tokens instead.

Quirks of the provider, checked against its code and by running it:
- it does not verify PKCE (the code verifier is not checked; we still send it);
- its token endpoint takes only client_secret_basic / client_secret_post, but any
  secret is accepted for unregistered clients, so a public client sends a dummy one;
- its ID token header carries no `kid` (the JWKS has one key, with a `kid`), so
  verifiers must fall back to the JWKS's only key.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import werkzeug.serving
from elevate_core.errors import ElevateError
from oidc_provider_mock import User as MockUser
from oidc_provider_mock import app as mock_app

from elevate_local.moto_seed import USERS
from elevate_local.ports import wait_for_port

DEFAULT_CLIENT_ID = "elevate-portal"
# Loopback redirect (RFC 8252 §7.3): the code is read from the redirect, never served.
DEFAULT_REDIRECT_URI = "http://127.0.0.1/elevate/callback"
DEFAULT_SCOPE = "openid profile email"
# The provider accepts any client secret for clients that were not registered.
_DUMMY_CLIENT_SECRET = "local-dev-public-client"  # noqa: S105 - not a secret


def seeded_user_claims() -> dict[str, dict[str, object]]:
    """Claims, by `sub`, for the users `elevate_local.moto_seed` puts in the Identity Store."""
    return {
        spec.external_id: {
            "preferred_username": spec.user_name,
            "email": spec.email,
            "email_verified": True,
            "name": spec.display_name,
        }
        for spec in USERS
    }


def subject_of(user: str) -> str:
    """The `sub` a seeded user name logs in with; any other value is taken as a `sub`."""
    return next((spec.external_id for spec in USERS if spec.user_name == user), user)


class OidcError(ElevateError):
    """The provider refused a step of the flow, or answered something unexpected."""


@dataclass(frozen=True, slots=True)
class TokenSet:
    id_token: str
    access_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    refresh_token: str | None = None
    scope: str | None = None


class OidcProvider:
    """oidc-provider-mock served by werkzeug on a background thread."""

    def __init__(self, server: werkzeug.serving.BaseWSGIServer, host: str) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.host = host
        self.port = server.server_port

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start(self) -> None:
        self._thread.start()
        wait_for_port(self.port, host=self.host, timeout=10, what="OIDC provider")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_oidc_provider(
    port: int,
    host: str = "127.0.0.1",
    *,
    token_max_age: timedelta = timedelta(hours=1),
    predefined_users: Mapping[str, Mapping[str, object]] | None = None,
) -> OidcProvider:
    """Serve the provider on host:port (port 0: any free port) until `.stop()`.

    `predefined_users` appear as one-click buttons on its login page; any user can also
    log in by typing a `sub`, and `register_users` can add or change users at any time.
    """
    flask_app = mock_app(
        require_client_registration=False,
        require_nonce=False,
        issue_refresh_token=True,
        access_token_max_age=token_max_age,
        user_claims=[
            MockUser(sub=sub, claims=dict(claims))
            for sub, claims in (predefined_users or {}).items()
        ],
    )
    server = werkzeug.serving.make_server(host, port, flask_app, threaded=True)
    provider = OidcProvider(server, host)
    provider._start()
    return provider


def register_users(
    issuer: str, users: Mapping[str, Mapping[str, object]], *, timeout: float = 10.0
) -> None:
    """Set each user's claims (keyed by `sub`) with `PUT {issuer}/users/{sub}`."""
    with httpx.Client(base_url=issuer, timeout=timeout) as client:
        for sub, claims in users.items():
            response = client.put(f"/users/{sub}", json=dict(claims))
            if response.status_code != httpx.codes.NO_CONTENT:
                raise OidcError(
                    f"registering {sub!r} failed: {response.status_code} {response.text}"
                )


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != httpx.codes.OK:
        raise OidcError(f"{what} failed: {response.status_code} {response.text[:500]}")
    body = response.json()
    if not isinstance(body, dict):
        raise OidcError(f"{what} returned {type(body).__name__}, not an object")
    return body


def fetch_token(
    issuer: str,
    user: str,
    client_id: str = DEFAULT_CLIENT_ID,
    *,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    scope: str = DEFAULT_SCOPE,
    client_secret: str = _DUMMY_CLIENT_SECRET,
    timeout: float = 10.0,
) -> TokenSet:
    """Log `user` (the `sub`) in through the authorization-code flow with PKCE."""
    verifier, challenge = _pkce_pair()
    nonce = secrets.token_urlsafe(16)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": secrets.token_urlsafe(16),
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        discovery = _json_object(
            client.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration"), "discovery"
        )
        code = _log_in(client, str(discovery["authorization_endpoint"]), params, user)
        tokens = _json_object(
            client.post(
                str(discovery["token_endpoint"]),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                    "client_id": client_id,
                    "client_secret": client_secret,
                },
            ),
            "token request",
        )
    return _token_set(tokens, nonce)


def _log_in(client: httpx.Client, authorize_url: str, params: dict[str, str], user: str) -> str:
    """Open the login form, log in as `user`: the code from the redirect back to us."""
    form = client.get(authorize_url, params=params)
    if form.status_code != httpx.codes.OK:
        raise OidcError(f"authorize failed: {form.status_code} {form.text[:500]}")
    # The login form posts back to the authorize URL with the same query.
    login = client.post(authorize_url, params=params, data={"sub": user})
    if login.status_code not in (httpx.codes.FOUND, httpx.codes.SEE_OTHER):
        raise OidcError(f"login as {user!r} failed: {login.status_code} {login.text[:500]}")
    redirect_uri = params["redirect_uri"]
    location = urlsplit(login.headers["location"])
    if location[:3] != urlsplit(redirect_uri)[:3]:
        raise OidcError(f"redirected to {login.headers['location']}, not {redirect_uri}")
    query = parse_qs(location.query)
    if "error" in query:
        raise OidcError(f"authorization denied: {query['error'][0]}")
    if query.get("state") != [params["state"]]:
        raise OidcError("state mismatch in the authorization response")
    return query["code"][0]


def _token_set(tokens: dict[str, Any], nonce: str) -> TokenSet:
    id_token = str(tokens["id_token"])
    # Signature and audience are the verifier's business; the nonce binds it to this flow.
    if jwt.decode(id_token, options={"verify_signature": False}).get("nonce") != nonce:
        raise OidcError("nonce mismatch in the ID token")
    return TokenSet(
        id_token=id_token,
        access_token=str(tokens["access_token"]),
        expires_in=int(tokens["expires_in"]),
        token_type=str(tokens.get("token_type", "Bearer")),
        refresh_token=tokens.get("refresh_token"),
        scope=tokens.get("scope"),
    )


def _serve(host: str, port: int) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    users = seeded_user_claims()
    provider = start_oidc_provider(port, host, predefined_users=users)
    try:
        register_users(provider.issuer, users)
        names = ", ".join(spec.user_name for spec in USERS)
        print(f"OIDC provider at {provider.issuer} (users: {names})", flush=True)
        stop.wait()
    finally:
        provider.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elevate_local.oidc")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the provider with the seeded users")
    serve.add_argument("--port", type=int, default=9400)
    serve.add_argument("--host", default="127.0.0.1")
    token = commands.add_parser("token", help="log a user in and print the ID token")
    token.add_argument("--issuer", required=True)
    token.add_argument("--user", required=True, help="a seeded user name, or a sub")
    token.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    args = parser.parse_args(argv)

    if args.command == "serve":
        return _serve(args.host, args.port)
    try:
        tokens = fetch_token(args.issuer, subject_of(args.user), args.client_id)
    except (OidcError, httpx.HTTPError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(tokens.id_token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
