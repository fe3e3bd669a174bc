"""Elevate audit ingest: process entry point (`elevate-audit-ingest`).

Workers: the outbox relay (the OCSF records of grants and timers → `elevate.audit.v1`), the
grants consumer (grant index), the CloudTrail consumer (raw mode, claimed by `eventID`,
content and position; its OCSF records and offsets commit in Kafka transactions), the
timer runner (records waiting for their grant) and, unless `ELEVATE_CLOUDTRAIL_QUEUE` is
empty, the SQS poller that brings CloudTrail's S3 deliveries onto `elevate.cloudtrail.v1` —
from the buckets and prefixes of `ELEVATE_CLOUDTRAIL_SOURCES` only.
"""

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
    add_timers,
    add_transactional_consumer,
    bootstrap,
    create_service_app,
)
from elevate_core.clock import Clock, SystemClock
from elevate_core.events.topics import Topics
from elevate_core.settings import Settings
from fastapi import FastAPI

from elevate_audit_ingest import purge
from elevate_audit_ingest.consumers import cloudtrail_handler, cloudtrail_key, grants_handler
from elevate_audit_ingest.ingest import TrailIngestor, aws_clients
from elevate_audit_ingest.scope import PolicyScope
from elevate_audit_ingest.service import CorrelationConfig, ManagedScope
from elevate_audit_ingest.settings import AuditSettings
from elevate_audit_ingest.timers import PENDING_TIMER, pending_record_handler

log = logging.getLogger(__name__)

SPEC = ServiceSpec(
    name="audit-ingest",
    port=8003,
    title="Elevate audit ingest",
    migrations=Path(__file__).parent / "migrations",
)


def build(
    ctx: ServiceContext,
    settings: AuditSettings,
    *,
    clock: Clock | None = None,
    access: AccessControl | None = None,
) -> None:
    """The composition root: audit-ingest's workers onto `ctx` (they start with the app's
    lifespan), every one on the same injected clock."""
    clock = clock or SystemClock()
    explicit = settings.managed()
    scope = ManagedScope() if explicit is None and access is not None else None
    config = CorrelationConfig(
        grace=settings.grant_grace, wait=settings.correlation_wait, managed=explicit, scope=scope
    )
    if scope is not None and access is not None:
        ctx.workers += [access, PolicyScope(access, scope)]
    outbox = add_outbox(ctx)
    add_consumer(
        ctx,
        name="audit-ingest.grants",
        topics=[Topics.GRANTS],
        handler=grants_handler(outbox=outbox, config=config, clock=clock),
    )
    add_transactional_consumer(
        ctx,
        name="audit-ingest.cloudtrail",
        topics=[Topics.CLOUDTRAIL],
        handler=cloudtrail_handler(
            topic=ctx.settings.topic(Topics.AUDIT), config=config, clock=clock
        ),
        raw_key=cloudtrail_key,
    )
    add_timers(
        ctx,
        {PENDING_TIMER: pending_record_handler(outbox=outbox, config=config, clock=clock)},
        clock=clock,
    )
    add_purge_hook(ctx, purge.TABLE, purge.purge_old_digests)  # bounded, like dedupe rows
    if settings.cloudtrail_queue:
        ctx.workers.append(_trail_ingestor(ctx, settings, clock))


def _trail_ingestor(ctx: ServiceContext, settings: AuditSettings, clock: Clock) -> TrailIngestor:
    s3, sqs = aws_clients(settings)
    sources = settings.sources() or None  # empty is refused in prod by the settings
    if sources is None:
        log.warning(
            "ELEVATE_CLOUDTRAIL_SOURCES is empty: fetching from any bucket a notice names "
            "(allowed in %s mode only; production refuses to start without it)",
            settings.mode.value,
        )
    return TrailIngestor(
        ctx.db,
        s3=s3,
        sqs=sqs,
        queue=settings.cloudtrail_queue,
        topic=settings.topic(Topics.CLOUDTRAIL),
        kafka=settings.kafka,
        sources=sources,
        client_id=f"{settings.service_name}-trail",
        wait_seconds=settings.cloudtrail_wait_seconds,
        visibility_timeout=settings.cloudtrail_visibility_timeout,
        max_messages=settings.cloudtrail_max_messages,
        parallel_files=settings.cloudtrail_parallel_files,
        publish_batch=settings.cloudtrail_publish_batch,
        clock=clock,
    )


def create_app(settings: Settings) -> FastAPI:
    if not isinstance(settings, AuditSettings):
        settings = AuditSettings.model_validate(settings.model_dump())
    ctx = bootstrap(settings)
    access = None
    if settings.managed() is None:
        # The policy decides what is managed (and so what uncovered activity to flag).
        access = AccessControl.from_settings(settings)
        access.load()
    build(ctx, settings, access=access)
    return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def run() -> None:
    SPEC.run(create_app, AuditSettings)


if __name__ == "__main__":
    run()
