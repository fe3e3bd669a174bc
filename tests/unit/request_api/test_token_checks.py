"""Every check a bearer token passes (issue 18 item 2), each refused for its own reason,
against an IdP we own through httpx.MockTransport and a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from elevate_core.kafka.security import KafkaEndpoint, KafkaSecurity, SecurityProtocol
from elevate_local.event_keys import LocalEventKeys
from elevate_local.supervisor import SERVICES, Ports, service_env
from elevate_request_api.auth import AuthError, DiscoveryError, JwksCache, TokenVerifier
from elevate_request_api.settings import RequestApiSettings
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

ISSUER = "https://idp.example"
AUDIENCE = "elevate-portal"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Idp:
    """Discovery and JWKS answered in process; counts what is fetched."""

    def __init__(self, *, alg: str | None = "RS256") -> None:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
        jwk.update(kid="k1", use="sig")
        if alg is not None:
            jwk["alg"] = alg
        self.keys: list[dict[str, Any]] = [jwk]
        self.discovery: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}
        self.status = 200
        self.fetches: Counter[str] = Counter()

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches[request.url.path] += 1
        if self.status != 200:
            return httpx.Response(self.status)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery)
        return httpx.Response(200, json={"keys": self.keys})

    def cache(self, clock: Clock | None = None, *, require_https: bool = True) -> JwksCache:
        return JwksCache(
            ISSUER,
            min_refresh_seconds=10,
            require_https=require_https,
            client=httpx.AsyncClient(transport=httpx.MockTransport(self.handle)),
            clock=clock or Clock(),
        )


def verifier(idp: Idp, clock: Clock | None = None, **options: Any) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks=idp.cache(clock),
        **({"user_claim": "sub"} | options),
    )


def token(
    *,
    alg: str = "RS256",
    typ: str | None = "at+jwt",
    kid: str = "k1",
    key: Any = KEY,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "00u-alice",
        "preferred_username": "alice",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": typ})


async def refused(check: TokenVerifier, bearer: str) -> str:
    with pytest.raises(AuthError) as caught:
        await check.verify(bearer)
    return str(caught.value)


async def test_a_good_access_token_names_its_subject() -> None:
    claims = await verifier(Idp()).verify(token())
    assert (claims.subject, claims.identifier) == ("00u-alice", "00u-alice")


async def test_the_configured_claim_identifies_the_user() -> None:
    entra = verifier(Idp(), user_claim="oid")
    claims = await entra.verify(token(oid="9f3c-object-id"))
    assert claims.identifier == "9f3c-object-id"
    assert await refused(entra, token()) == "token has no 'oid' claim"


async def test_sub_is_required() -> None:
    assert await refused(verifier(Idp()), token(sub=None)) == "token has no 'sub' claim"
    assert await refused(verifier(Idp()), token(sub="")) == "token has no 'sub' claim"


@pytest.mark.parametrize("typ", ["JWT", None])
async def test_id_tokens_are_refused_unless_configured(typ: str | None) -> None:
    bearer = token(typ=typ)
    assert await refused(verifier(Idp()), bearer) == f"token type {typ!r} is not accepted"
    accepting = verifier(Idp(), token_types=["access_token", "id_token"])
    assert (await accepting.verify(bearer)).subject == "00u-alice"


async def test_rfc9068_media_type_is_an_access_token_and_other_types_are_refused() -> None:
    assert (await verifier(Idp()).verify(token(typ="application/at+jwt"))).subject
    both = verifier(Idp(), token_types=["access_token", "id_token"])
    assert await refused(both, token(typ="logout+jwt")) == "token type 'logout+jwt' is not accepted"
    only_id = verifier(Idp(), token_types=["id_token"])
    assert await refused(only_id, token()) == "token type 'at+jwt' is not accepted"


async def test_algorithm_must_be_the_one_the_key_declares() -> None:
    """The key is published for RS256: a PS256 signature by the same RSA key is refused."""
    assert await refused(verifier(Idp()), token(alg="PS256")) == (
        "token algorithm 'PS256' is not its key's"
    )


async def test_keys_without_alg_are_matched_by_key_type() -> None:
    undeclared = verifier(Idp(alg=None))
    assert (await undeclared.verify(token(alg="PS256"))).subject == "00u-alice"
    ec_signed = token(alg="ES256", key=EC_KEY)  # an RSA key never checks an EC signature
    assert await refused(undeclared, ec_signed) == "token algorithm 'ES256' is not its key's"


async def test_algorithm_must_be_on_the_allow_list() -> None:
    rs256_only = verifier(Idp(alg=None), algorithms=["RS256"])
    assert (
        await refused(rs256_only, token(alg="PS256")) == "token algorithm 'PS256' is not accepted"
    )


def test_settings_allow_only_asymmetric_algorithms() -> None:
    with pytest.raises(ValidationError, match="only asymmetric algorithms"):
        RequestApiSettings(mode="test", oidc_algorithms=["RS256", "HS256"])
    defaults = RequestApiSettings(mode="test")
    assert defaults.oidc_token_types == ["access_token"]
    assert defaults.jwt_max_lifetime_seconds == 12 * 3600


async def test_lifetime_over_the_maximum_is_refused() -> None:
    now = int(time.time())
    long_lived = token(iat=now, exp=now + 12 * 3600 + 1)
    assert await refused(verifier(Idp()), long_lived) == (
        "token lifetime exceeds the maximum of 43200 seconds"
    )
    assert (await verifier(Idp()).verify(token(iat=now, exp=now + 12 * 3600))).subject
    short = verifier(Idp(), max_lifetime_seconds=300)
    assert await refused(short, token()) == "token lifetime exceeds the maximum of 300 seconds"


async def test_exp_and_iat_are_required() -> None:
    assert await refused(verifier(Idp()), token(exp=None)) == (
        'invalid token: Token is missing the "exp" claim'
    )
    assert await refused(verifier(Idp()), token(iat=None)) == (
        'invalid token: Token is missing the "iat" claim'
    )


async def test_nbf_in_the_future_is_refused_beyond_the_leeway() -> None:
    now = int(time.time())
    check = verifier(Idp(), leeway=30)
    assert await refused(check, token(nbf=now + 120)) == "token not yet valid"
    assert (await check.verify(token(nbf=now + 5))).subject  # clock skew within the leeway


async def test_iat_in_the_future_is_refused_beyond_the_leeway() -> None:
    now = int(time.time())
    check = verifier(Idp(), leeway=30)
    assert await refused(check, token(iat=now + 120, exp=now + 600)) == "token issued in the future"
    assert (await check.verify(token(iat=now + 5))).subject


async def test_azp_must_name_us_when_there_are_several_audiences() -> None:
    several = [AUDIENCE, "another-app"]
    reason = "token for several audiences, and its azp is not this one"
    assert await refused(verifier(Idp()), token(aud=several)) == reason
    assert await refused(verifier(Idp()), token(aud=several, azp="another-app")) == reason
    assert (await verifier(Idp()).verify(token(aud=several, azp=AUDIENCE))).subject
    assert (await verifier(Idp()).verify(token(aud=[AUDIENCE]))).subject  # one: no azp needed


async def test_discovery_issuer_must_be_the_configured_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    idp = Idp()
    idp.discovery["issuer"] = "https://idp.example/other-tenant"
    with pytest.raises(
        DiscoveryError, match=re.escape("names issuer 'https://idp.example/other-tenant'")
    ):
        await idp.cache().candidates("k1")
    assert await refused(verifier(idp), token()) == "cannot verify tokens right now"
    assert "refusing the issuer's discovery document" in caplog.text
    assert idp.fetches["/jwks"] == 0  # keys from an impostor's document are never fetched


async def test_discovery_issuer_trailing_slash_is_normalised() -> None:
    idp = Idp()
    idp.discovery["issuer"] = f"{ISSUER}/"
    assert (await verifier(idp).verify(token())).subject == "00u-alice"


async def test_plain_http_jwks_uri_is_refused_when_https_is_required() -> None:
    idp = Idp()
    idp.discovery["jwks_uri"] = "http://idp.example/jwks"
    with pytest.raises(
        DiscoveryError, match=re.escape("jwks_uri 'http://idp.example/jwks' is not https")
    ):
        await idp.cache(require_https=True).candidates("k1")
    assert len(await idp.cache(require_https=False).candidates("k1")) == 1  # dev and test


async def test_unknown_kids_against_an_empty_key_set_fetch_once_per_window() -> None:
    idp, clock = Idp(), Clock()
    idp.keys = []
    check = verifier(idp, clock)
    bearers = [token(kid=f"garbage-{n}") for n in range(20)]
    reasons = await asyncio.gather(*(refused(check, b) for b in bearers))
    assert set(reasons) == {"token signed with an unknown key"}
    for bearer in bearers:  # one after another, too
        await refused(check, bearer)
    assert idp.fetches["/jwks"] == 1
    clock.now += 10  # the window has passed: the next unknown kid may look again
    await refused(check, bearers[0])
    await refused(check, bearers[1])
    assert idp.fetches["/jwks"] == 2


async def test_rotated_key_is_found_on_the_next_window() -> None:
    idp, clock = Idp(), Clock()
    check = verifier(idp, clock)
    assert (await check.verify(token())).subject
    idp.keys[0]["kid"] = "k2"  # the IdP rotates (same key material, new kid)
    assert await refused(check, token(kid="k2")) == "token signed with an unknown key"
    clock.now += 10
    assert (await check.verify(token(kid="k2"))).subject
    assert idp.fetches["/jwks"] == 2


async def test_a_failing_idp_is_asked_once_per_window() -> None:
    idp, clock = Idp(), Clock()
    idp.status = 503
    check = verifier(idp, clock)
    for _ in range(10):
        assert await refused(check, token()) == "cannot verify tokens right now"
    assert sum(idp.fetches.values()) == 1
    idp.status = 200
    clock.now += 10  # back, and the window has passed
    assert (await check.verify(token())).subject == "00u-alice"


def test_make_dev_gives_request_api_alone_the_id_token_type(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The local provider's access tokens are opaque: its ID tokens are dev's bearers."""
    envs = {service: _dev_env(service, tmp_path) for _, service in SERVICES}
    monkeypatch.setenv("ELEVATE_OIDC_TOKEN_TYPES", envs["request_api"]["ELEVATE_OIDC_TOKEN_TYPES"])
    assert RequestApiSettings(mode="dev").oidc_token_types == ["access_token", "id_token"]
    # the other services refuse unknown ELEVATE_* names: they must not get it
    assert [s for s, env in envs.items() if "ELEVATE_OIDC_TOKEN_TYPES" in env] == ["request_api"]


def _dev_env(service: str, data_dir: Path) -> dict[str, str]:
    return service_env(
        service,
        ports=Ports(),
        data_dir=data_dir,
        kafka=KafkaEndpoint("127.0.0.1:9092", KafkaSecurity(SecurityProtocol.PLAINTEXT)),
        keys=LocalEventKeys(data_dir / "keys"),
        moto_url="http://127.0.0.1:5000",
        proxy_url="http://127.0.0.1:5001",
        database_url=None,
    )


def _with_header(bearer: str, **header: Any) -> str:
    """`bearer` with its header fields replaced (its signature no longer matches)."""
    import base64

    head, payload, signature = bearer.split(".")
    fields = json.loads(base64.urlsafe_b64decode(head + "=="))
    fields.update(header)
    raw = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{raw}.{payload}.{signature}"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": ["RS256"]}, "token algorithm ['RS256'] is not accepted"),
        ({"alg": {"RS256": 1}}, "token algorithm {'RS256': 1} is not accepted"),
        ({"kid": ["k1"]}, "malformed token"),
        ({"typ": ["at+jwt"]}, "token signature does not verify"),
    ],
)
async def test_header_fields_of_the_wrong_json_type_are_refused(
    header: dict[str, Any], reason: str
) -> None:
    # An unhashable `alg` once reached a set lookup: a 500 for anyone, without logging in.
    assert await refused(verifier(Idp()), _with_header(token(), **header)) == reason
