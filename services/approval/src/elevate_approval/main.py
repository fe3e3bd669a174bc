"""Elevate approval: process entry point (`elevate-approval`).

Wires the requests-topic consumer, the outbox relay (the only writer of
`elevate.decisions.v1`), the expiry timers, the hot-reloaded policy and the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from pathlib import Path

from elevate_core.access import AccessControl, policy_resolver
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
from elevate_core.clock import Clock, SystemClock
from elevate_core.db import Database
from elevate_core.directory.aws import Directory
from elevate_core.events.topics import Topics
from elevate_core.policy import PolicyWatcher
from elevate_core.progress import CaughtUpGate, TopicProgress
from elevate_core.settings import Mode, Settings
from fastapi import FastAPI

from elevate_approval import consumers, metrics, service, timers
from elevate_approval.settings import ApprovalSettings

log = logging.getLogger("elevate.approval")

SPEC = ServiceSpec(
    name="approval",
    port=8001,
    title="Elevate approval",
    migrations=Path(__file__).parent / "migrations",
)


class PolicyWorker:
    """Polls the policy file while the service runs (hot reload)."""

    def __init__(self, watcher: PolicyWatcher) -> None:
        self.watcher = watcher
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await self.watcher.run(self._stop)

    async def stop(self) -> None:
        self._stop.set()


class PendingGaugeWorker:
    """Recomputes the pending-requests gauge from the database (all replicas agree)."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await metrics.refresh_pending_gauge(self.db)
            except Exception as exc:  # database away: the next round tries again
                log.debug("pending gauge: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def stop(self) -> None:
        self._stop.set()


def _own(settings: Settings, name: str) -> float:
    """approval's own setting `name`, or its default under the shared settings."""
    if isinstance(settings, ApprovalSettings):
        return float(getattr(settings, name))
    return float(ApprovalSettings.model_fields[name].default)


def build(
    ctx: ServiceContext,
    *,
    directory: service.DirectoryPort | None = None,
    clock: Clock | None = None,
    expiry_gate: bool = True,
) -> service.Deps:
    """The composition root: add approval's workers to `ctx`; returns what its handlers
    share. Refuses to start without a valid policy (PolicyError propagates).

    `expiry_gate=False` (tests driving handlers without Kafka) expires without waiting
    for the requests consumer."""
    settings = ctx.settings
    clock = clock or SystemClock()
    watcher = PolicyWatcher(settings.policy_file, interval=_own(settings, "policy_poll_seconds"))
    if directory is None:
        # Lazy: nothing calls AWS until a request needs it (or the policy names users:
        # they are resolved to ids before it goes into force).
        directory = Directory.from_region(
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            person_key=settings.person_key,
        )
    if isinstance(directory, Directory):
        watcher.resolve = policy_resolver(
            directory, warn_account_names=settings.mode is not Mode.DEV
        )
    watcher.load()
    progress = TopicProgress(
        kafka=settings.kafka,
        topic=settings.topic(Topics.REQUESTS),
        group=consumer_group(settings, consumers.CONSUMER_NAME),
    )
    ctx.workers.append(progress)  # (closes its Kafka clients on stop)
    gate = CaughtUpGate(progress)
    deps = service.Deps(
        outbox=add_outbox(ctx),
        directory=directory,
        policy=watcher,
        expiry_gate=gate.passed if expiry_gate else None,
        expiry_grace=timedelta(seconds=_own(settings, "expiry_grace_seconds")),
        horizon=settings.request_horizon,
    )
    add_consumer(
        ctx,
        name=consumers.CONSUMER_NAME,
        topics=[Topics.REQUESTS],
        handler=consumers.requests_handler(deps),
    )
    add_timers(ctx, timers.timer_handlers(deps), clock=clock)
    if isinstance(directory, Directory):
        # Hot reload plus the approver-reachability check against the Identity Store.
        ctx.workers.append(AccessControl(watcher, directory))
    else:
        ctx.workers.append(PolicyWorker(watcher))
    ctx.workers.append(PendingGaugeWorker(ctx.db, _own(settings, "pending_gauge_seconds")))
    return deps


def create_app(settings: Settings) -> FastAPI:
    ctx = bootstrap(settings)
    build(ctx)
    return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def run() -> None:
    SPEC.run(create_app, ApprovalSettings)


if __name__ == "__main__":
    run()
