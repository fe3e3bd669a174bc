"""Elevate request API: process entry point (`elevate-request-api`)."""

from __future__ import annotations

import logging
from pathlib import Path

from elevate_core.access import AccessControl
from elevate_core.app import (
    ServiceContext,
    ServiceSpec,
    add_consumer,
    add_outbox,
    add_purge_hook,
    bootstrap,
    create_service_app,
    listen,
)
from elevate_core.clock import Clock, SystemClock
from elevate_core.events.topics import Topics
from elevate_core.settings import Mode, Settings
from fastapi import FastAPI
from starlette.middleware import Middleware

from elevate_request_api import audit_api, slack
from elevate_request_api.api import install_error_mapping, router
from elevate_request_api.auth import IdentityMapping, JwksCache, TokenVerifier
from elevate_request_api.consumers import (
    audit_record_key,
    project,
    project_activity,
    wants_activity,
)
from elevate_request_api.deps import ApiState, BearerAuth
from elevate_request_api.portal import sessions
from elevate_request_api.portal.api import install_portal
from elevate_request_api.portal.signin import OidcClient
from elevate_request_api.settings import RequestApiSettings
from elevate_request_api.store import STATUS_CHANNEL
from elevate_request_api.stream import StreamSlots

log = logging.getLogger(__name__)

SPEC = ServiceSpec(
    name="request-api",
    port=8000,
    title="Elevate request API",
    migrations=Path(__file__).parent / "migrations",
)


def build(
    ctx: ServiceContext,
    settings: RequestApiSettings,
    *,
    access: AccessControl,
    clock: Clock | None = None,
) -> ApiState:
    """The composition root: request-api's consumers and workers onto `ctx`; returns
    what its routes share."""
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
            wants=wants_activity,
        )
    listen(ctx, STATUS_CHANNEL)
    ctx.workers.append(access)
    add_purge_hook(ctx, "portal_sessions", sessions.purge_ended)  # ended sessions, sign-ins
    jwks = JwksCache(
        settings.oidc_issuer,
        min_refresh_seconds=settings.jwks_min_refresh_seconds,
        require_https=settings.mode is Mode.PROD,  # dev and test run local http issuers
    )
    verifier = TokenVerifier.of(
        settings, jwks, audience=settings.oidc_audience, token_types=settings.oidc_token_types
    )
    if settings.user_claim_is_mutable:
        log.warning(
            "ELEVATE_OIDC_USER_CLAIM=%s can be changed by users: dev mode only, never "
            "in production (docs/security.md, Identity mapping)",
            settings.oidc_user_claim,
        )
    return ApiState(
        ctx=ctx,
        settings=settings,
        access=access,
        verifier=verifier,
        portal=OidcClient.of(settings, jwks),  # one discovery and key set for both
        identity=IdentityMapping(settings.oidc_user_attribute, settings.external_id_issuer),
        outbox=outbox,
        clock=clock or SystemClock(),
        streams=StreamSlots(settings.max_streams_per_user),
    )


def create_app(
    settings: Settings, *, access: AccessControl | None = None, clock: Clock | None = None
) -> FastAPI:
    assert isinstance(settings, RequestApiSettings)
    ctx = bootstrap(settings)
    access = access or AccessControl.from_settings(settings)
    access.load()  # no policy, no service: fail at start, not on the first request
    state = build(ctx, settings, access=access, clock=clock)
    app = create_service_app(
        ctx,
        title=SPEC.title,
        migrations=SPEC.migrations,
        routers=[router, audit_api.router, slack.router],
        # The OpenAPI document needs a token too, but in dev (its docs page fetches it).
        edge=[Middleware(BearerAuth, document=settings.mode is not Mode.DEV)],
        max_body_bytes=settings.max_body_bytes,
        api=True,
    )
    install_error_mapping(app)
    install_portal(app)
    app.state.api = state
    return app


def run() -> None:
    SPEC.run(create_app, RequestApiSettings)


if __name__ == "__main__":
    run()
