"""Elevate notifier: process entry point (`elevate-notifier`).

Wires the events consumer (requests, decisions, grants), the "ending soon" timers, one
delivery worker per configured channel, the forged-event watcher on the dead-letter topic
and the outbox relay that carries dead deliveries there."""

from __future__ import annotations

import logging
from pathlib import Path

from elevate_core.app import (
    ServiceContext,
    ServiceSpec,
    add_consumer,
    add_outbox,
    add_timers,
    bootstrap,
    consumer_group,
    create_service_app,
)
from elevate_core.directory.aws import Directory
from elevate_core.events.topics import Topics
from elevate_core.retry import RetryPolicy
from elevate_core.settings import Settings
from fastapi import FastAPI

from elevate_notifier import channels, consumers, service, timers
from elevate_notifier.delivery import DeliveryWorker
from elevate_notifier.refusals import RefusalWatcher
from elevate_notifier.settings import NotifierSettings

log = logging.getLogger("elevate.notifier")

SPEC = ServiceSpec(
    name="notifier",
    port=8004,
    title="Elevate notifier",
    migrations=Path(__file__).parent / "migrations",
)


def build(
    ctx: ServiceContext,
    settings: NotifierSettings,
    *,
    directory: service.DirectoryPort | None = None,
) -> service.Deps:
    """The composition root: notifier's workers onto `ctx`; returns what they share."""
    if directory is None:
        directory = Directory.from_region(
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            person_key=settings.person_key,
        )
    senders = channels.senders(settings)
    deps = service.Deps(
        settings=settings,
        directory=directory,
        channels=frozenset(s.channel for s in senders),
    )
    if not senders:
        log.warning("no channel configured (docs/notifications.md): nothing will be sent")
    outbox = add_outbox(ctx)  # dead deliveries go to the dead-letter topic through it
    add_consumer(
        ctx,
        name=consumers.CONSUMER_NAME,
        topics=[Topics.REQUESTS, Topics.DECISIONS, Topics.GRANTS],
        handler=consumers.events_handler(deps),
    )
    add_timers(ctx, timers.timer_handlers(deps))
    retry = RetryPolicy(
        base_delay=settings.delivery_backoff_seconds,
        max_delay=settings.delivery_max_backoff_seconds,
    )
    for sender in senders:
        ctx.workers.append(
            DeliveryWorker(
                ctx.db,
                sender,
                outbox=outbox,
                max_attempts=settings.delivery_max_attempts,
                retry=retry,
            )
        )
    ctx.workers.append(
        RefusalWatcher(
            ctx.db,
            deps,
            kafka=settings.kafka,
            topic=settings.topic(Topics.DLQ),
            group=consumer_group(settings, "notifier.refusals"),
        )
    )
    return deps


def create_app(settings: Settings) -> FastAPI:
    assert isinstance(settings, NotifierSettings)
    ctx = bootstrap(settings)
    build(ctx, settings)
    return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def run() -> None:
    SPEC.run(create_app, NotifierSettings)


if __name__ == "__main__":
    run()
