"""Bearer-token authentication: OIDC JWTs checked against the issuer's JWKS.

Only algorithms from an asymmetric allow-list are accepted (so `alg: none` and an HS256
token "signed" with the public key are refused before any key is touched), and only the
algorithm its key declares. Keys come from the issuer's discovery document (whose
`issuer` must be ours), are cached, and are refreshed when a token names a `kid` we have
not seen — at most once per window, however many tokens ask, so garbage kids or an empty
key set cannot hammer the IdP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import jwt
from elevate_core.directory.identity import EXTERNAL_ID, UserKey
from elevate_core.errors import ElevateError
from jwt import PyJWK

log = logging.getLogger(__name__)

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
ACCESS_TOKEN = "access_token"  # noqa: S105 - a token type; RFC 9068 `typ` at+jwt
ID_TOKEN = "id_token"  # noqa: S105 - a token type; `typ` JWT or absent
_AT_JWT = frozenset({"at+jwt", "application/at+jwt"})

if TYPE_CHECKING:
    from elevate_request_api.settings import RequestApiSettings


class AuthError(ElevateError):
    """The bearer token is missing or not acceptable (HTTP 401). Not retryable."""

    retryable = False


class DiscoveryError(Exception):
    """The issuer's discovery document is not one we may trust (a configuration fault)."""


class KeysUnavailable(Exception):
    """No key set has been fetched yet, and the refresh window forbids another try."""


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    identifier: str  # the configured user claim's value (`sub` by default)
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IdentityMapping:
    """Which Identity Store user a verified token is: the user claim's value as an
    ExternalId of `issuer`, or as a unique attribute (docs/security.md, Identity mapping).
    The token's other claims (names, e-mail) never choose the user."""

    attribute: str
    issuer: str

    def key(self, claims: Claims) -> UserKey:
        issuer = self.issuer if self.attribute == EXTERNAL_ID else ""
        return UserKey(self.attribute, claims.identifier, issuer)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    declared_alg: str | None  # the JWK's own `alg`; PyJWK invents one when it is absent
    jwk: PyJWK

    def may_sign(self, alg: str) -> bool:
        if self.declared_alg is not None:
            return self.declared_alg == alg
        return self.jwk.key_type in _kty_for(alg)


class JwksCache:
    def __init__(
        self,
        issuer: str,
        *,
        min_refresh_seconds: float = 10.0,
        require_https: bool = False,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.min_refresh_seconds = min_refresh_seconds
        self.require_https = require_https
        self._client = client or httpx.AsyncClient(timeout=10)
        self._clock = clock
        self._keys: list[SigningKey] = []
        self._loaded = False
        self._attempted_at: float | None = None
        self._jwks_uri: str | None = None
        self._document: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def _discover(self) -> str:
        if self._jwks_uri is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            response = await self._client.get(url)
            response.raise_for_status()
            document = response.json()
            self._jwks_uri = _checked_discovery(
                document, self.issuer, require_https=self.require_https
            )
            self._document = document
        return self._jwks_uri

    async def endpoint(self, name: str) -> str:
        """An endpoint the issuer's checked discovery document names (the portal's
        `authorization_endpoint` and `token_endpoint`); https outside dev and test."""
        await self._discover()
        url = self._document.get(name)
        if not isinstance(url, str) or not url:
            raise DiscoveryError(f"the discovery document names no {name}")
        if self.require_https and urlsplit(url).scheme.lower() != "https":
            raise DiscoveryError(f"{name} {url!r} is not https")
        return url

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    async def refresh(self) -> None:
        """Fetch the key set, at most once per `min_refresh_seconds`: attempts count, failed
        ones too, so neither unknown kids nor a down IdP turn requests into fetches."""
        async with self._lock:
            now = self._clock()
            if (
                self._attempted_at is not None
                and now - self._attempted_at < self.min_refresh_seconds
            ):
                return
            self._attempted_at = now
            response = await self._client.get(await self._discover())
            response.raise_for_status()
            body = response.json()
            self._keys = _signing_keys(body.get("keys", []) if isinstance(body, dict) else [])
            self._loaded = True

    async def candidates(self, kid: str | None) -> list[SigningKey]:
        if not self._loaded or (kid is not None and all(k.kid != kid for k in self._keys)):
            await self.refresh()
        if not self._loaded:
            raise KeysUnavailable("the issuer's keys could not be fetched")
        if kid is not None:
            return [k for k in self._keys if k.kid == kid]
        # Some providers (the local one among them) sign without a kid: any key may fit.
        return list(self._keys)

    async def aclose(self) -> None:
        await self._client.aclose()


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        user_claim: str,
        jwks: JwksCache,
        leeway: float = 30.0,
        token_types: Iterable[str] = (ACCESS_TOKEN,),
        algorithms: Iterable[str] = ASYMMETRIC,
        max_lifetime_seconds: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.user_claim = user_claim
        self.jwks = jwks
        self.leeway = leeway
        self.token_types = frozenset(token_types)
        self.algorithms = frozenset(algorithms) & ASYMMETRIC  # never a symmetric one
        self.max_lifetime_seconds = max_lifetime_seconds
        self._clock = clock

    @classmethod
    def of(
        cls,
        settings: RequestApiSettings,
        jwks: JwksCache,
        *,
        audience: str,
        token_types: Iterable[str],
    ) -> TokenVerifier:
        """The settings' checks for tokens meant for `audience` (the API's bearer tokens,
        the portal's ID tokens)."""
        return cls(
            issuer=settings.oidc_issuer,
            audience=audience,
            user_claim=settings.oidc_user_claim,
            leeway=settings.jwt_leeway_seconds,
            token_types=token_types,
            algorithms=settings.oidc_algorithms,
            max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
            jwks=jwks,
        )

    async def verify(self, token: str) -> Claims:
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        keys = [
            k for k in await self._keys(kid if isinstance(kid, str) else None) if k.may_sign(alg)
        ]
        if not keys:
            raise AuthError(f"token algorithm {alg!r} is not its key's")
        last: jwt.PyJWTError | None = None
        for key in keys:
            try:
                claims = self._decode(token, key.jwk, alg)
            except jwt.InvalidSignatureError as exc:
                last = exc  # another key may be the one that signed it
                continue
            # The type is checked once the header is known to be the issuer's own.
            if _token_type(header.get("typ")) not in self.token_types:
                raise AuthError(f"token type {header.get('typ')!r} is not accepted")
            return self._claims(claims)
        raise AuthError("token signature does not verify") from last

    async def _keys(self, kid: str | None) -> list[SigningKey]:
        try:
            keys = await self.jwks.candidates(kid)
        except DiscoveryError as exc:
            log.error("refusing the issuer's discovery document: %s", exc)
            raise AuthError("cannot verify tokens right now") from None
        except (httpx.HTTPError, KeyError, json.JSONDecodeError, KeysUnavailable) as exc:
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
                # iat is checked below, to tell "issued in the future" from nbf's refusal
                options={"require": ["exp", "iat", "iss", "aud"], "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from None
        return claims

    def _claims(self, claims: dict[str, Any]) -> Claims:
        self._check_lifetime(claims)
        self._check_azp(claims)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("token has no 'sub' claim")
        identifier = claims.get(self.user_claim)
        if not isinstance(identifier, str) or not identifier:
            raise AuthError(f"token has no {self.user_claim!r} claim")
        return Claims(subject=subject, identifier=identifier, raw=claims)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        iat, exp = claims["iat"], claims["exp"]  # both required, exp checked numeric
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            raise AuthError("token has a malformed 'iat' claim")
        if iat > self._clock() + self.leeway:
            raise AuthError("token issued in the future")
        if exp - iat > self.max_lifetime_seconds:
            raise AuthError(
                f"token lifetime exceeds the maximum of {self.max_lifetime_seconds:g} seconds"
            )

    def _check_azp(self, claims: dict[str, Any]) -> None:
        # OIDC Core 3.1.3.7: with several audiences, azp names the party it was issued to.
        audiences = claims["aud"]
        if (
            isinstance(audiences, list)
            and len(audiences) > 1
            and claims.get("azp") != self.audience
        ):
            raise AuthError("token for several audiences, and its azp is not this one")


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed token") from None
    return header


def _token_type(typ: object) -> str | None:
    if typ is None:
        return ID_TOKEN
    if not isinstance(typ, str):
        return None
    if typ.lower() in _AT_JWT:
        return ACCESS_TOKEN
    return ID_TOKEN if typ.lower() == "jwt" else None


def _checked_discovery(document: object, issuer: str, *, require_https: bool) -> str:
    """The document's jwks_uri, once the document proves to be our issuer's own."""
    if not isinstance(document, dict):
        raise DiscoveryError("the discovery document is not a JSON object")
    named = document.get("issuer")
    if not isinstance(named, str) or named.rstrip("/") != issuer:
        raise DiscoveryError(f"the discovery document names issuer {named!r}, not {issuer!r}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise DiscoveryError("the discovery document names no jwks_uri")
    if require_https and urlsplit(jwks_uri).scheme.lower() != "https":
        raise DiscoveryError(f"jwks_uri {jwks_uri!r} is not https")
    return jwks_uri


def _signing_keys(entries: object) -> list[SigningKey]:
    keys: list[SigningKey] = []
    for data in entries if isinstance(entries, list) else []:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            jwk = PyJWK.from_dict(data)
        except jwt.PyJWTError:
            continue  # a key type we do not support is simply not usable
        alg, kid = data.get("alg"), data.get("kid")
        keys.append(
            SigningKey(
                kid=kid if isinstance(kid, str) else None,
                declared_alg=alg if isinstance(alg, str) else None,
                jwk=jwk,
            )
        )
    return keys


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
