"""What every Elevate service process shares: settings, logging, tracing, database,
health probes, metrics, problem responses and the lifecycle of background workers
(outbox relay, consumers, timers, the purge), which start and stop with the HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware import Middleware

from elevate_core.clock import Clock
from elevate_core.db import Database
from elevate_core.dlq import topics_written_by
from elevate_core.edge import DEFAULT_MAX_BODY_BYTES, BodyLimit, SecurityHeaders
from elevate_core.events.signing import SIGNED_TOPICS
from elevate_core.events.topics import Topics
from elevate_core.health import health
from elevate_core.kafka.admin import longest_stay, missing_topics
from elevate_core.kafka.consumer import (
    Committed,
    Consumer,
    ConsumerConfig,
    Handler,
    RawKey,
    Wants,
)
from elevate_core.kafka.transactional import (
    FETCH_RECORDS,
    PARTITION_FETCH_BYTES,
    BatchHandler,
    TransactionalConsumer,
    TransactionalOutput,
)
from elevate_core.migrate import upgrade
from elevate_core.notify import PgListener
from elevate_core.outbox import CHANNEL as OUTBOX_CHANNEL
from elevate_core.outbox import Outbox
from elevate_core.problems import install_problem_handlers
from elevate_core.purge import NO_TOPICS, Horizons, NoTopics, PurgeBatch, PurgeHook, Purger
from elevate_core.relay import OutboxRelay
from elevate_core.retry import DEFAULT_POLICY, Retrying
from elevate_core.settings import Mode, Settings
from elevate_core.telemetry import configure_logging, configure_tracing, shutdown_tracing
from elevate_core.timers import CHANNEL as TIMER_CHANNEL
from elevate_core.timers import TimerHandler, TimerRunner

log = logging.getLogger(__name__)


class Worker(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class ServiceContext:
    """Everything a service's routes and workers share, built once per process."""

    settings: Settings
    db: Database
    workers: list[Worker] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    startup: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    purge_hooks: list[PurgeHook] = field(default_factory=list)


def create_service_app(
    ctx: ServiceContext,
    *,
    title: str,
    migrations: Path | None = None,
    routers: list[Any] | None = None,
    edge: list[Middleware] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    api: bool = False,
) -> FastAPI:
    """The service's app. `edge` is the service's own middleware (authentication), run
    after the security headers are arranged and before any body is read. `api`: the
    service has an API, whose OpenAPI document it serves (its `edge` must guard it);
    the others serve only their probes (and a document of them in dev)."""
    ctx.workers.append(_purger(ctx))
    dev = ctx.settings.mode is Mode.DEV
    # The docs pages load their assets from a CDN, and fetch the document without a
    # token: dev only.
    docs = dev
    app = FastAPI(
        title=title,
        lifespan=_lifespan(ctx, migrations),
        openapi_url="/openapi.json" if api or dev else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        middleware=[
            Middleware(SecurityHeaders, hsts=not dev),
            *(edge or []),
            Middleware(BodyLimit, max_bytes=max_body_bytes),
        ],
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    _add_probes(app, ctx)
    for router in routers or []:
        app.include_router(router)
    return app


def _tune_gc() -> None:
    """What the process built to start (modules, settings, the app) lives as long as it:
    frozen out of the cyclic collector's scans. And collect the youngest generation every
    50,000 allocations, not 700: the consumers allocate a dict per field of every record
    they read, nearly all freed by reference counting, and the default made full scans of
    a large heap a third of audit-ingest's CPU (bench/audit.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _lifespan(
    ctx: ServiceContext, migrations: Path | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Migrate, run the startup hooks and start the workers; on shutdown stop them all."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await upgrade(ctx.db, migrations)
        for hook in ctx.startup:
            await hook()
        _tune_gc()
        topics_task = asyncio.create_task(_check_topics_forever(ctx))
        for worker in ctx.workers:
            ctx.tasks.append(asyncio.create_task(worker.run(), name=type(worker).__name__))
        try:
            yield
        finally:
            topics_task.cancel()
            await _stop_workers(ctx)
            await ctx.db.dispose()
            shutdown_tracing()

    return lifespan


async def _stop_workers(ctx: ServiceContext) -> None:
    """Ask every worker to stop, wait up to 10 s for them, then cancel the stragglers."""
    for worker in ctx.workers:
        await worker.stop()
    if not ctx.tasks:
        return
    _done, pending = await asyncio.wait(ctx.tasks, timeout=10)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _add_probes(app: FastAPI, ctx: ServiceContext) -> None:
    """/healthz, /readyz and /metrics, kept out of the OpenAPI document."""

    # The probes answer anyone: status only. Which component is away, and why, is in
    # the logs and in elevate_component_up, never told to an anonymous caller.
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        # Readiness depends on our own database only: a Kafka outage must not
        # take request-api out of its Service (outbox keeps accepting requests).
        try:
            await asyncio.wait_for(ctx.db.ping(), timeout=3)
        except Exception as exc:
            log.warning("not ready: the database does not answer (%r)", exc)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _check_topics_forever(ctx: ServiceContext, *, longest: float = 30.0) -> None:
    """Report (health + log) until every topic this process reads or writes exists.

    Services do not create topics — their principals may not (docs/security.md): the admin
    principal does, with `elevate topics create` (the Helm chart's job; `make dev` and the
    tests do it before the services start). A missing topic is a deployment step not taken."""
    settings = ctx.settings
    retrying = Retrying(DEFAULT_POLICY, component="kafka-topics", what="checking topics")
    pause = 1.0
    while True:
        try:
            missing = await missing_topics(settings.kafka, _topics_used(ctx))
        except Exception as exc:
            decision = retrying.failed_outside_work(exc)
            where = settings.kafka_bootstrap_servers
            health.failing("kafka-topics", f"Kafka unreachable at {where}: {decision.reason}")
            log.warning(
                "Kafka unreachable at %s (%s); retrying in %.0fs",
                where,
                decision.reason,
                decision.delay,
            )
            await DEFAULT_POLICY.wait(decision)
            continue
        if not missing:
            health.ok("kafka-topics", "topics present")
            return
        health.failing("kafka-topics", f"missing topics {missing}")
        log.warning(
            "topics %s do not exist (or %s may not see them): create them as the admin "
            "principal with `elevate topics create`",
            missing,
            settings.kafka.principal,
        )
        await asyncio.sleep(pause)
        pause = min(longest, pause * 2)


def _topics_used(ctx: ServiceContext) -> list[str]:
    settings = ctx.settings
    used = {t for w in ctx.workers if isinstance(w, Consumer) for t in w.config.topics}
    if any(isinstance(w, OutboxRelay) for w in ctx.workers):
        used |= topics_written_by(settings.service_name, prefix=settings.topic_prefix)
    if used:
        used.add(settings.topic(Topics.DLQ))
    return sorted(used)


def add_purge_hook(ctx: ServiceContext, table: str, batch: PurgeBatch) -> None:
    """Purge rows of a service's own table on the runtime's schedule (elevate_core.purge).
    Register before `create_service_app`."""
    ctx.purge_hooks.append(PurgeHook(table, batch))


def _purger(ctx: ServiceContext) -> Purger:
    settings = ctx.settings

    async def broker_stay() -> timedelta | NoTopics | None:
        # Every topic a consumer of this process reads: its dedupe rows guard those.
        topics = {t for w in ctx.workers if isinstance(w, Consumer) for t in w.config.topics}
        if not topics:
            return NO_TOPICS
        return await longest_stay(settings.kafka, topics)

    return Purger(
        ctx.db,
        Horizons.from_settings(settings),
        broker_stay=broker_stay,
        hooks=ctx.purge_hooks,
        batch_size=settings.purge_batch_size,
        interval=settings.purge_interval_seconds,
        enforce=settings.mode is Mode.PROD,
    )


def add_outbox(ctx: ServiceContext) -> Outbox:
    """The service's outbox writer, and the relay that publishes it."""
    settings = ctx.settings
    ctx.workers.append(
        OutboxRelay(
            ctx.db,
            kafka=settings.kafka,
            client_id=f"{settings.service_name}-relay",
            dlq_topic=settings.topic(Topics.DLQ),
        )
    )
    listen(ctx, OUTBOX_CHANNEL, TIMER_CHANNEL)
    return Outbox(
        source=f"elevate/{settings.service_name}",
        topic_prefix=settings.topic_prefix,
        signer=settings.event_signer(),
    )


def consumer_group(settings: Settings, name: str) -> str:
    """The consumer group (and dedupe namespace) `add_consumer` gives consumer `name`."""
    return f"{settings.topic_prefix}{name}{settings.consumer_group_suffix}"


def add_consumer(
    ctx: ServiceContext,
    *,
    name: str,
    topics: list[Topics],
    handler: Handler,
    raw_key: RawKey | None = None,
    session_timeout_ms: int | None = None,
    on_committed: Committed | None = None,
    wants: Wants | None = None,
) -> Consumer:
    """Consume `topics` (prefixed as configured) into `handler`, dead-lettering as needed;
    `wants` (ConsumerConfig) skips the events the handler has nothing to do with.

    `name` is the consumer group and the dedupe namespace (`consumer_group`); a new
    ELEVATE_CONSUMER_GROUP_SUFFIX starts new groups from the earliest offset (a replay)."""
    settings = ctx.settings
    timeouts: dict[str, int] = {}
    if session_timeout_ms is not None:
        timeouts = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": max(500, session_timeout_ms // 3),
        }
    consumer = Consumer(
        ctx.db,
        ConsumerConfig(
            name=consumer_group(settings, name),
            topics=tuple(settings.topic(t) for t in topics),
            kafka=settings.kafka,
            dlq_topic=settings.topic(Topics.DLQ),
            raw_key=raw_key,
            signed={settings.topic(t): t for t in topics if t in SIGNED_TOPICS},
            verifier=settings.event_verifier() if set(topics) & SIGNED_TOPICS else None,
            wants=wants,
            **timeouts,  # type: ignore[arg-type]
        ),
        handler,
        on_committed=on_committed,
    )
    ctx.workers.append(consumer)
    return consumer


def add_transactional_consumer(
    ctx: ServiceContext,
    *,
    name: str,
    topics: list[Topics],
    handler: BatchHandler,
    raw_key: RawKey | None = None,
    max_records: int = FETCH_RECORDS,
) -> TransactionalConsumer:
    """Consume `topics` a partition's batch at a time into `handler`, whose outputs and the
    consumed offsets commit in one Kafka transaction (`kafka/transactional.py`); the
    transactional ids start with the consumer group, so the ACL table grants them by prefix.
    """
    settings = ctx.settings
    group = consumer_group(settings, name)
    consumer = TransactionalConsumer(
        ctx.db,
        ConsumerConfig(
            name=group,
            topics=tuple(settings.topic(t) for t in topics),
            kafka=settings.kafka,
            dlq_topic=settings.topic(Topics.DLQ),
            raw_key=raw_key,
            max_records=max_records,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        ),
        handler,
        output=TransactionalOutput(settings.kafka, transactional_prefix=group, group_id=group),
    )
    ctx.workers.append(consumer)
    return consumer


def add_timers(
    ctx: ServiceContext, handlers: dict[str, TimerHandler], *, clock: Clock | None = None
) -> TimerRunner:
    runner = TimerRunner(ctx.db, handlers, clock=clock)
    ctx.workers.append(runner)
    listen(ctx, OUTBOX_CHANNEL, TIMER_CHANNEL)
    return runner


def listen(ctx: ServiceContext, *channels: str) -> None:
    """On PostgreSQL, other replicas' commits marked on `channels` wake this process's
    waiters too (one LISTEN connection per process, whoever asks first)."""
    if ctx.db.is_sqlite:
        return
    for worker in ctx.workers:
        if isinstance(worker, ListenerWorker):
            worker.listener.channels.extend(
                c for c in channels if c not in worker.listener.channels
            )
            return
    ctx.workers.append(ListenerWorker(PgListener(ctx.db, list(channels))))


class ListenerWorker:
    """Runs the PostgreSQL LISTEN loop so other replicas' commits wake this one."""

    def __init__(self, listener: PgListener) -> None:
        self.listener = listener
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        self.listener.start()
        await self._stopped.wait()
        await self.listener.stop()

    async def stop(self) -> None:
        self._stopped.set()


def bootstrap(settings: Settings) -> ServiceContext:
    configure_logging(
        service=settings.service_name, level=settings.log_level, json_logs=settings.log_json
    )
    configure_tracing(
        service=settings.service_name, otlp_endpoint=settings.otel_exporter_otlp_endpoint
    )
    return ServiceContext(settings=settings, db=Database(settings.resolved_database_url()))


def serve(app: FastAPI, settings: Settings) -> None:
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


@dataclass(frozen=True)
class ServiceSpec:
    """A service's identity: name, default port, its migrations folder."""

    name: str
    port: int
    title: str
    migrations: Path

    def load_settings(self, settings_cls: type[Settings] = Settings) -> Settings:
        import os

        from elevate_core.settings import load_settings_or_exit

        defaults: dict[str, Any] = {}
        if "ELEVATE_HTTP_PORT" not in os.environ:
            defaults["http_port"] = self.port
        if "ELEVATE_SERVICE_NAME" not in os.environ:
            defaults["service_name"] = self.name
        return load_settings_or_exit(settings_cls, **defaults)

    def run(
        self, create_app: Callable[[Settings], FastAPI], settings_cls: type[Settings] = Settings
    ) -> None:
        settings = self.load_settings(settings_cls)
        serve(create_app(settings), settings)
