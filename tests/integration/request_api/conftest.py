"""request-api under test: real uvicorn on a free port, real Kafka, PostgreSQL and
(seeded) moto behind the proxy that gives the seeded users ExternalIds, and a JWT issuer
the tests own (so they can forge every attack). A test user's `sub` is the ExternalId the
Identity Store holds for them, as in production."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from elevate_core.access import AccessControl
from elevate_core.clock import Clock
from elevate_core.directory.aws import Directory
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.policy import PolicyWatcher
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.ports import free_port, wait_for_port
from elevate_local.seed_data import external_id
from elevate_request_api.main import create_app
from elevate_request_api.settings import RequestApiSettings
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from tests import harness

ROOT = Path(__file__).resolve().parents[3]
AUDIENCE = "elevate-portal"


class Issuer:
    """Discovery + JWKS over HTTP, with keys the test can rotate; and a token endpoint
    for the portal's code flow, answering a code the test registered in `codes` (its
    ID token's claims: `user` plus overrides, e.g. another `nonce`)."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.redeemed: list[dict[str, str]] = []  # the token requests, as sent
        self.rotate()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                        "authorization_endpoint": f"{issuer.url}/authorize",
                        "token_endpoint": f"{issuer.url}/token",
                    }
                elif self.path == "/jwks":
                    body = {"keys": [issuer.public_jwk(kid) for kid in issuer.keys]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                issuer.redeemed.append(form)
                claims = dict(issuer.codes.pop(form.get("code", ""), {}))
                if self.path != "/token" or not claims:
                    self.send_response(400)
                    self.end_headers()
                    return
                data = json.dumps({"id_token": issuer.token(**claims)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def rotate(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.current = kid
        return kid

    def public_jwk(self, kid: str) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        jwk.update(kid=kid, use="sig", alg="RS256")
        return jwk

    def token(self, user: str = "alice", *, kid: str | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": external_id(user),
            "preferred_username": user,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key_id = kid or self.current
        return jwt.encode(claims, self.keys[key_id], algorithm="RS256", headers={"kid": key_id})


@pytest.fixture(autouse=True)
async def _catalog(catalog: str) -> str:
    """Every test here runs the service against its own topics (tests/integration)."""
    return catalog


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="session")
def seeded(moto_endpoint: str) -> SeededOrganisation:
    return seed_organisation(moto_endpoint)


@pytest.fixture(scope="session")
def aws_proxy(moto_endpoint: str, issuer: Issuer) -> Iterator[AwsFaultProxy]:
    """moto with the seeded users' ExternalIds of the test issuer (moto stores none)."""
    proxy = AwsFaultProxy(moto_endpoint)
    proxy.external_ids.link_seeded(issuer.url)
    proxy.start()
    yield proxy
    proxy.stop()


@dataclass
class Api:
    url: str
    settings: RequestApiSettings
    issuer: Issuer
    seeded: SeededOrganisation
    kafka: KafkaEndpoint  # the test's own view (it plays the other services): super user
    app: FastAPI  # (its routes, for the tests that enumerate them)

    def client(self, user: str | None = "alice") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.issuer.token(user)}"} if user else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


ApiFactory = Callable[..., "asyncio.Future[Api]"]


@pytest.fixture
async def start_api(
    kafka: Any,
    aws_proxy: AwsFaultProxy,
    seeded: SeededOrganisation,
    issuer: Issuer,
    topic_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(
        database_url: str,
        *,
        policy: Path | None = None,
        endpoint: KafkaEndpoint | None = None,  # default: request-api's principal
        oidc_issuer: str | None = None,
        clock: Clock | None = None,
        **extra: Any,
    ) -> Api:
        port = free_port()
        aws_proxy.external_ids.link_seeded(oidc_issuer or issuer.url)
        settings = RequestApiSettings(
            mode="test",
            http_port=port,
            database_url=database_url,
            **(endpoint or kafka.endpoint(Principal.REQUEST_API)).as_settings(),
            **harness.event_settings(Principal.REQUEST_API),
            topic_prefix=topic_prefix,
            aws_endpoint_url=aws_proxy.endpoint_url,
            oidc_issuer=oidc_issuer or issuer.url,
            oidc_audience=AUDIENCE,
            policy_file=policy or ROOT / "deploy/local/policy.yaml",
            log_json=True,
            jwks_min_refresh_seconds=0,
            # the test issuer's and the local provider's tokens are ID tokens (`typ` JWT)
            **({"oidc_token_types": ["access_token", "id_token"]} | extra),
        )
        directory = Directory.from_region(region="us-east-1", endpoint_url=aws_proxy.endpoint_url)
        access = AccessControl(PolicyWatcher(settings.policy_file), directory)
        app = create_app(settings, access=access, clock=clock)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        await asyncio.to_thread(wait_for_port, port, timeout=60, what="request-api")
        return Api(
            url=f"http://127.0.0.1:{port}",
            settings=settings,
            issuer=issuer,
            seeded=seeded,
            kafka=kafka.endpoint(),
            app=app,
        )

    yield start
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*(t for _, t in servers), return_exceptions=True)


@pytest.fixture
async def api(start_api: Callable[..., Any], pg_url: str) -> Api:
    result: Api = await start_api(pg_url)
    return result
