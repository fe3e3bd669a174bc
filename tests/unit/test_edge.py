"""Every service's HTTP edge (elevate_core.app + edge): security headers, the body cap
before any parsing, docs off in production, and probes that tell anonymous callers
nothing but their status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from elevate_core.app import ServiceContext, create_service_app
from elevate_core.db import Database
from elevate_core.health import health
from elevate_core.settings import Mode, Settings
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from tests.unit.production import set_production_env

BODY_TOO_LARGE = "urn:elevate:problem:body-too-large"


class Echo(BaseModel):
    text: str


def _app(
    tmp_path: Path, *, mode: Mode = Mode.TEST, db: str | None = None, **options: Any
) -> tuple[FastAPI, list[str]]:
    seen: list[str] = []
    router = APIRouter()

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("db password is hunter2")

    @router.post("/echo")
    async def echo(body: Echo) -> Echo:
        seen.append(body.text)
        return body

    settings = Settings(mode=mode, service_name="edge-test")
    database = Database(db or f"sqlite+aiosqlite:///{tmp_path}/a.db")
    ctx = ServiceContext(settings=settings, db=database)
    return create_service_app(ctx, title="t", routers=[router], **options), seen


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_every_answer_carries_the_security_headers(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    async with _client(app) as client:
        for response in (
            await client.get("/healthz"),
            await client.post("/echo", json={"text": "hi"}),
            await client.get("/no-such-path"),
            await client.get("/crash"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_a_crash_is_a_problem_that_tells_nothing(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    async with _client(app) as client:
        response = await client.get("/crash")
    assert response.status_code == 500
    assert response.json()["detail"] == "internal error"
    assert "hunter2" not in response.text


async def test_dev_answers_without_hsts(tmp_path: Path) -> None:
    # `make dev` serves plain http on localhost: HSTS there would pin the browser to https.
    app, _ = _app(tmp_path, mode=Mode.DEV)
    async with _client(app) as client:
        response = await client.get("/healthz")
    assert "strict-transport-security" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_declared_body_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    app, seen = _app(tmp_path, max_body_bytes=1024)
    async with _client(app) as client:
        response = await client.post("/echo", json={"text": "x" * 2000})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == BODY_TOO_LARGE
    assert seen == []


async def test_a_streamed_body_over_the_cap_is_refused(tmp_path: Path) -> None:
    # No Content-Length (chunked): the cap counts what arrives.
    app, seen = _app(tmp_path, max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    async with _client(app) as client:
        response = await client.post(
            "/echo", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["type"] == BODY_TOO_LARGE
    assert seen == []


async def test_a_body_under_the_cap_reaches_the_route(tmp_path: Path) -> None:
    app, seen = _app(tmp_path, max_body_bytes=1024)
    async with _client(app) as client:
        response = await client.post("/echo", json={"text": "hello"})
    assert response.status_code == 200
    assert seen == ["hello"]


async def test_validation_refusals_have_a_stable_type(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    async with _client(app) as client:
        malformed = await client.post(
            "/echo", content=b"{not json", headers={"content-type": "application/json"}
        )
        missing = await client.post("/echo", json={})
        # Not UTF-8: FastAPI raises its own 400 "error parsing the body" for this one.
        undecodable = await client.post(
            "/echo", content=b"\x10\x04\xff{", headers={"content-type": "application/json"}
        )
    assert (undecodable.status_code, undecodable.json()["type"]) == (
        422,
        "urn:elevate:problem:malformed-json",
    )
    assert malformed.status_code == 422
    assert malformed.json()["type"] == "urn:elevate:problem:malformed-json"
    assert missing.json()["type"] == "urn:elevate:problem:invalid-input"


async def test_docs_are_served_in_dev_only_and_the_document_by_services_with_an_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev, _ = _app(tmp_path, mode=Mode.DEV)
    async with _client(dev) as client:
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200
    test, _ = _app(tmp_path)
    async with _client(test) as client:
        # The docs pages load their assets from a CDN and fetch the document without a
        # token: outside dev they do not exist, nor does a probes-only service's document.
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404
    set_production_env(monkeypatch, tmp_path)
    prod, _ = _app(tmp_path, mode=Mode.PROD, api=True)
    async with _client(prod) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/redoc")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 200  # (its edge guards it)


async def test_healthz_tells_anonymous_callers_only_its_status(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    health.failing("kafka-topics", "Kafka unreachable at 10.9.8.7:9092: connection refused")
    try:
        async with _client(app) as client:
            response = await client.get("/healthz")
    finally:
        health.ok("kafka-topics")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_does_not_tell_why_the_database_fails(tmp_path: Path) -> None:
    broken = tmp_path / "secret-name.db"
    broken.mkdir()  # a directory where the database file should be: every ping fails
    app, _ = _app(tmp_path, db=f"sqlite+aiosqlite:///{broken}")
    async with _client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}
    assert "secret-name" not in response.text
