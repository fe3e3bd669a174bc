"""Elevate approval: process entry point (`elevate-approval`).

Wires the requests-topic consumer, the outbox relay (the only writer of
`elevate.decisions.v1`), the expiry timers, the hot-reloaded policy and the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from elevate_core.access import AccessControl
from elevate_core.app import (
    ServiceContext,
    ServiceSpec,
    add_consumer,
    add_outbox,
    add_timers,
    bootstrap,
    create_service_app,
)
from elevate_core.clock import Clock, SystemClock
from elevate_core.db import Database
from elevate_core.directory.aws import Directory
from elevate_core.events.topics import Topics
from elevate_core.policy import PolicyWatcher
from elevate_core.settings import Settings
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


def wire(
    ctx: ServiceContext,
    *,
    directory: service.DirectoryPort | None = None,
    clock: Clock | None = None,
) -> service.Deps:
    """Add approval's workers to `ctx`; returns what its handlers share.

    Refuses to start without a valid policy (PolicyError propagates)."""
    settings = ctx.settings
    clock = clock or SystemClock()
    interval = settings.policy_poll_seconds if isinstance(settings, ApprovalSettings) else 5.0
    watcher = PolicyWatcher(settings.policy_file, interval=interval)
    watcher.load()
    if directory is None:
        # Lazy: nothing calls AWS until a request needs it, so an unreachable
        # directory never stops the service from starting.
        directory = Directory.from_region(
            region=settings.aws_region, endpoint_url=settings.aws_endpoint_url
        )
    deps = service.Deps(outbox=add_outbox(ctx), directory=directory, policy=watcher, clock=clock)
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
    gauge = settings.pending_gauge_seconds if isinstance(settings, ApprovalSettings) else 30.0
    ctx.workers.append(PendingGaugeWorker(ctx.db, gauge))
    return deps


def create_app(settings: Settings) -> FastAPI:
    ctx = bootstrap(settings)
    wire(ctx)
    return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def run() -> None:
    SPEC.run(create_app, ApprovalSettings)


if __name__ == "__main__":
    run()
