"""The portal's sign-in: the OIDC authorization-code flow with PKCE (RFC 7636, S256)
against the configured issuer, a `state` bound to the browser by a cookie (no login
CSRF), a `nonce` bound to the ID token, and the user found by the same identity binding
as bearer tokens (docs/security.md, Identity mapping) — never by a name claim."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from elevate_core.settings import Mode

from elevate_request_api.auth import (
    ID_TOKEN,
    AuthError,
    Claims,
    DiscoveryError,
    JwksCache,
    TokenVerifier,
)
from elevate_request_api.settings import RequestApiSettings

log = logging.getLogger(__name__)
# The local provider (dev, tests) insists on a client secret but accepts any for a client
# it does not know; outside prod a public client sends this placeholder.
LOCAL_PLACEHOLDER_SECRET = "local-dev-public-client"  # noqa: S105 - not a secret


class SignInError(AuthError):
    """The sign-in could not be finished (the user is sent to start again)."""


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


@dataclass
class OidcClient:
    settings: RequestApiSettings
    jwks: JwksCache
    verifier: TokenVerifier

    @classmethod
    def of(cls, settings: RequestApiSettings, jwks: JwksCache) -> OidcClient:
        # an ID token is for the client
        verifier = TokenVerifier.of(
            settings, jwks, audience=settings.portal_client_id, token_types=(ID_TOKEN,)
        )
        return cls(settings, jwks, verifier)

    @property
    def redirect_uri(self) -> str:
        return f"{self.settings.portal_url}/callback"

    async def authorize_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        endpoint = await self._endpoint("authorization_endpoint")
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.portal_client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.settings.portal_scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def redeem(self, code: str, *, code_verifier: str, nonce: str) -> Claims:
        """Exchange the code for tokens; the ID token's verified claims."""
        endpoint = await self._endpoint("token_endpoint")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.settings.portal_client_id,
        }
        secret = self._client_secret()
        if secret is not None:
            form["client_secret"] = secret
        try:
            response = await self.jwks.client.post(endpoint, data=form)
        except httpx.HTTPError as exc:
            log.warning("portal sign-in: the token endpoint is unreachable: %r", exc)
            raise SignInError("the identity provider is unreachable; try again") from None
        if response.status_code != httpx.codes.OK:
            # The body may echo the code; only the status is logged.
            log.warning("portal sign-in: the token endpoint answered %d", response.status_code)
            raise SignInError("the identity provider refused the sign-in")
        try:
            id_token = str(response.json()["id_token"])
        except (ValueError, KeyError, TypeError):
            raise SignInError("the identity provider returned no ID token") from None
        claims = await self.verifier.verify(id_token)
        got = claims.raw.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got, nonce):
            raise SignInError("the ID token is not for this sign-in (nonce)")
        return claims

    async def _endpoint(self, name: str) -> str:
        try:
            return await self.jwks.endpoint(name)
        except DiscoveryError as exc:
            log.error("refusing the issuer's discovery document: %s", exc)
            raise SignInError("sign-in is not available right now") from None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("portal sign-in: discovery failed: %r", exc)
            raise SignInError("the identity provider is unreachable; try again") from None

    def _client_secret(self) -> str | None:
        path = self.settings.portal_client_secret_file
        if path is not None:
            return path.read_text().strip()  # read each time: a rotated secret is used
        return None if self.settings.mode is Mode.PROD else LOCAL_PLACEHOLDER_SECRET
