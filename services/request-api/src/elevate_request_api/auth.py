"""Bearer-token authentication: OIDC JWTs checked against the issuer's JWKS.

Only asymmetric algorithms are accepted (so `alg: none` and an HS256 token "signed"
with the public key are refused before any key is touched); keys come from the
issuer's discovery document, are cached, and are refreshed when a token names a
`kid` we have not seen (rate-limited, so garbage kids cannot hammer the IdP).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from elevate_core.errors import ElevateError
from jwt import PyJWK

log = logging.getLogger(__name__)

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class AuthError(ElevateError):
    """The bearer token is missing or not acceptable (HTTP 401). Not retryable."""

    retryable = False


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    user_name: str
    raw: dict[str, Any]


class JwksCache:
    def __init__(
        self,
        issuer: str,
        *,
        min_refresh_seconds: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.min_refresh_seconds = min_refresh_seconds
        self._client = client or httpx.AsyncClient(timeout=10)
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at = 0.0
        self._jwks_uri: str | None = None
        self._lock = asyncio.Lock()

    async def _discover(self) -> str:
        if self._jwks_uri is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            response = await self._client.get(url)
            response.raise_for_status()
            self._jwks_uri = str(response.json()["jwks_uri"])
        return self._jwks_uri

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched_at < self.min_refresh_seconds:
                return
            response = await self._client.get(await self._discover())
            response.raise_for_status()
            keys: dict[str | None, PyJWK] = {}
            for data in response.json().get("keys", []):
                if data.get("use", "sig") != "sig":
                    continue
                try:
                    key = PyJWK.from_dict(data)
                except jwt.PyJWTError:
                    continue  # a key type we do not support is simply not usable
                keys[data.get("kid")] = key
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def candidates(self, kid: str | None) -> list[PyJWK]:
        if not self._keys:
            await self.refresh(force=True)
        if kid is not None and kid not in self._keys:
            await self.refresh()
        if kid is not None:
            return [self._keys[kid]] if kid in self._keys else []
        # Some providers (the local one among them) sign without a kid: any key may fit.
        return list(self._keys.values())

    async def aclose(self) -> None:
        await self._client.aclose()


class TokenVerifier:
    def __init__(
        self, *, issuer: str, audience: str, user_claim: str, jwks: JwksCache, leeway: float = 30.0
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.user_claim = user_claim
        self.jwks = jwks
        self.leeway = leeway

    async def verify(self, token: str) -> Claims:
        alg, kid = _signing_header(token)
        last: jwt.PyJWTError | None = None
        for key in await self._keys(kid):
            if not _may_sign(key, alg):
                continue
            try:
                claims = self._decode(token, key, alg)
            except jwt.InvalidSignatureError as exc:
                last = exc  # another key may be the one that signed it
                continue
            return self._claims(claims)
        raise AuthError("token signature does not verify") from last

    async def _keys(self, kid: str | None) -> list[PyJWK]:
        try:
            keys = await self.jwks.candidates(kid)
        except (httpx.HTTPError, KeyError, json.JSONDecodeError) as exc:
            log.warning("cannot fetch the issuer's keys: %r", exc)
            raise AuthError("cannot verify tokens right now") from None
        if not keys:
            raise AuthError("token signed with an unknown key")
        return keys

    def _decode(self, token: str, key: PyJWK, alg: str) -> dict[str, Any]:
        """The verified claims; a wrong signature is raised as is, every other failure
        as the AuthError saying why the token is refused."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from None
        return claims

    def _claims(self, claims: dict[str, Any]) -> Claims:
        user_name = claims.get(self.user_claim)
        if not isinstance(user_name, str) or not user_name:
            raise AuthError(f"token has no {self.user_claim!r} claim")
        return Claims(subject=str(claims.get("sub", "")), user_name=user_name, raw=claims)


def _signing_header(token: str) -> tuple[str, str | None]:
    """The token's algorithm and key id, refusing symmetric and `none` algorithms."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed token") from None
    alg = header.get("alg")
    if alg not in ASYMMETRIC:
        raise AuthError(f"token algorithm {alg!r} is not accepted")
    return alg, header.get("kid")


def _may_sign(key: PyJWK, alg: str) -> bool:
    return key.algorithm_name in (alg, None) or key.key_type in _kty_for(alg)


_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "token from an unexpected issuer"),
    (jwt.InvalidAudienceError, "token for another audience"),
)


def _refusal(exc: jwt.PyJWTError) -> AuthError:
    for kind, reason in _REFUSALS:
        if isinstance(exc, kind):
            return AuthError(reason)
    return AuthError(f"invalid token: {exc}")


def _kty_for(alg: str) -> tuple[str, ...]:
    if alg.startswith(("RS", "PS")):
        return ("RSA",)
    if alg.startswith("ES"):
        return ("EC",)
    return ("OKP",)
