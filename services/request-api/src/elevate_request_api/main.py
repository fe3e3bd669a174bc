"""Elevate request API: process entry point (`elevate-request-api`)."""

from __future__ import annotations

from pathlib import Path

from elevate_core.access import AccessControl
from elevate_core.app import (
    ListenerWorker,
    ServiceSpec,
    add_consumer,
    add_outbox,
    bootstrap,
    create_service_app,
)
from elevate_core.events.topics import Topics
from elevate_core.notify import PgListener
from elevate_core.settings import Settings
from fastapi import FastAPI

from elevate_request_api.api import router
from elevate_request_api.auth import JwksCache, TokenVerifier
from elevate_request_api.consumers import audit_record_key, project, project_activity
from elevate_request_api.deps import ApiState
from elevate_request_api.service import STATUS_CHANNEL
from elevate_request_api.settings import RequestApiSettings

SPEC = ServiceSpec(
    name="request-api",
    port=8000,
    title="Elevate request API",
    migrations=Path(__file__).parent / "migrations",
)


def create_app(settings: Settings, *, access: AccessControl | None = None) -> FastAPI:
    assert isinstance(settings, RequestApiSettings)
    ctx = bootstrap(settings)
    access = access or AccessControl.from_settings(settings)
    access.load()  # no policy, no service: fail at start, not on the first request
    outbox = add_outbox(ctx)
    if settings.read_model_consumer:
        add_consumer(
            ctx,
            name="request-api.read-model",
            topics=[Topics.REQUESTS, Topics.DECISIONS, Topics.GRANTS],
            handler=project,
        )
        add_consumer(
            ctx,
            name="request-api.activity",
            topics=[Topics.AUDIT],
            handler=project_activity,
            raw_key=audit_record_key,
        )
    if not ctx.db.is_sqlite:
        ctx.workers.append(ListenerWorker(PgListener(ctx.db, [STATUS_CHANNEL])))
    ctx.workers.append(access)
    verifier = TokenVerifier(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience,
        user_claim=settings.oidc_user_claim,
        leeway=settings.jwt_leeway_seconds,
        jwks=JwksCache(settings.oidc_issuer, min_refresh_seconds=settings.jwks_min_refresh_seconds),
    )
    app = create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations, routers=[router])
    app.state.api = ApiState(
        ctx=ctx, settings=settings, access=access, verifier=verifier, outbox=outbox
    )
    return app


def run() -> None:
    SPEC.run(create_app, RequestApiSettings)


if __name__ == "__main__":
    run()
