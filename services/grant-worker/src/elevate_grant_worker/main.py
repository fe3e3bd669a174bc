"""Elevate grant worker: process entry point (`elevate-grant-worker`)."""

from __future__ import annotations

from pathlib import Path

from elevate_core.app import ServiceSpec, bootstrap, create_service_app
from elevate_core.settings import Settings
from fastapi import FastAPI

SPEC = ServiceSpec(
    name="grant-worker",
    port=8002,
    title="Elevate grant worker",
    migrations=Path(__file__).parent / "migrations",
)


def create_app(settings: Settings) -> FastAPI:
    ctx = bootstrap(settings)
    return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def run() -> None:
    SPEC.run(create_app)


if __name__ == "__main__":
    run()
