"""Elevate request API: process entry point (`elevate-request-api`)."""

from __future__ import annotations

from pathlib import Path

from elevate_core.app import ServiceSpec, bootstrap, create_service_app
from elevate_core.settings import Settings
from fastapi import FastAPI

SPEC = ServiceSpec(
    name="request-api",
    port=8000,
    title="Elevate request API",
    migrations=Path(__file__).parent / "migrations",
)


def create_app(settings: Settings) -> FastAPI:
    ctx = bootstrap(settings)
    return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def run() -> None:
    SPEC.run(create_app)


if __name__ == "__main__":
    run()
