"""grant-worker against real Kafka, PostgreSQL and moto behind the fault-injecting proxy.

The worker runs in-process (its consumers, timers, outbox relay and assignment worker as
tasks) with a ManualClock; only the crash tests start it as a process. All tests share one
moto server, so each test uses principals of its own (fresh UUIDs) and asserts per grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from elevate_core.app import ServiceContext, bootstrap
from elevate_core.clock import ManualClock
from elevate_core.db import Database
from elevate_core.events.base import Event
from elevate_core.events.models import Person, RequestApproved, RequestSnapshot
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.migrate import upgrade
from elevate_core.notify import wake
from elevate_core.timers import CHANNEL as TIMER_CHANNEL
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.main import SPEC, StandingProvider, build
from elevate_grant_worker.models import Assignment, Grant, Standing
from elevate_grant_worker.service import WORK_CHANNEL, grant_id_for
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_grant_worker.worker import AssignmentWorker
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.ports import free_port
from elevate_local.postgres import PostgresCluster
from elevate_request_api.consumers import project
from elevate_request_api.main import SPEC as REQUEST_API
from elevate_request_api.models import AccessRequest
from sqlalchemy import text

from tests import harness
from tests.harness import eventually

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
async def _catalog(catalog: str) -> str:
    """Every test here runs the service against its own topics (tests/integration)."""
    return catalog


@pytest.fixture(scope="session")
def seeded(moto_endpoint: str) -> SeededOrganisation:
    return seed_organisation(moto_endpoint)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[AwsFaultProxy]:
    p = AwsFaultProxy(moto_endpoint, seed=20260302)
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def sso(moto_endpoint: str) -> SSOAdminClient:
    """Straight to moto (not through the proxy): what AWS really holds."""
    return boto3.client(
        "sso-admin",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def assignment_exists(sso: SSOAdminClient, seeded: SeededOrganisation, t: Triple) -> int:
    """How many copies of the USER assignment moto holds (a duplicate would be a bug)."""
    rows = sso.list_account_assignments(
        InstanceArn=seeded.instance_arn,
        AccountId=t.account_id,
        PermissionSetArn=t.permission_set_arn,
    )["AccountAssignments"]
    return sum(1 for r in rows if r["PrincipalId"] == t.principal_id)


def new_triple(
    seeded: SeededOrganisation,
    account: str = "payments-staging",
    permission_set: str = "PowerUserAccess",
) -> Triple:
    return Triple(
        seeded.account_ids[account], seeded.permission_set_arns[permission_set], str(uuid.uuid4())
    )


def approval(
    t: Triple, *, start: datetime, end: datetime, request_id: uuid.UUID | None = None
) -> RequestApproved:
    return RequestApproved(
        snapshot=RequestSnapshot(
            request_id=request_id or uuid.uuid4(),
            requester=Person(user_name=f"u-{t.principal_id[:8]}", user_id=t.principal_id),
            account_id=t.account_id,
            permission_set_name="PowerUserAccess",
            permission_set_arn=t.permission_set_arn,
            start=start,
            end=end,
            justification="incident 42",
            matched_rule="engineers-staging",
            policy_version="v1",
            approvers=("bob",),
        )
    )


def settings_for(
    *, pg_url: str, kafka: KafkaBroker, topic_prefix: str, aws: str, **extra: Any
) -> GrantWorkerSettings:
    values: dict[str, Any] = {
        "mode": "test",
        "service_name": "grant-worker",
        "database_url": pg_url,
        **kafka.endpoint(Principal.GRANT_WORKER).as_settings(),
        **harness.event_settings(Principal.GRANT_WORKER),
        "topic_prefix": topic_prefix,
        "aws_endpoint_url": aws,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "log_json": False,
        "log_level": "WARNING",
        "poll_initial_seconds": 0.02,
        "poll_max_seconds": 0.2,
        "retry_base_seconds": 0.02,
        "retry_max_seconds": 0.3,
        "revocation_retry_seconds": 0.5,
        "worker_poll_seconds": 0.5,
        "consumer_session_timeout_ms": 6000,
        # A lost leader's lease expires quickly, so takeovers in tests take seconds.
        "leader_lease_seconds": 5.0,
        "aws_timeout_seconds": 2.0,
    }
    values.update(extra)
    return GrantWorkerSettings(**values)


class Publisher:
    """Publishes events to this test's topics, as their writers would."""

    def __init__(self, kafka: KafkaBroker, prefix: str) -> None:
        self.kafka = kafka
        self.prefix = prefix

    async def __call__(self, *events: Event) -> None:
        await harness.publish_events(self.kafka.endpoint(), *events, prefix=self.prefix)


@pytest.fixture
async def publish(kafka: KafkaBroker, topic_prefix: str) -> Publisher:
    await ensure_topics(kafka.endpoint(Principal.ADMIN), prefix=topic_prefix)
    return Publisher(kafka, topic_prefix)


@dataclass
class Running:
    ctx: ServiceContext
    clock: ManualClock
    workers: harness.Workers = field(default_factory=harness.Workers)

    def start_held(self) -> None:
        self.workers.start_held()

    @property
    def worker(self) -> AssignmentWorker:
        return next(w for w in self.ctx.workers if isinstance(w, AssignmentWorker))

    @property
    def db(self) -> Any:
        return self.ctx.db

    async def ended_events(self, request_id: uuid.UUID) -> int:
        return (await self.events(request_id)).count("ended")

    async def outbox_data(self, ce_type_part: str) -> list[tuple[str, Any]]:
        """(ce_type, data) of the outbox events whose type contains `ce_type_part`."""
        return [
            (e.ce_type, e.data) for e in await harness.outbox(self.db) if ce_type_part in e.ce_type
        ]

    async def events(self, request_id: uuid.UUID | None = None) -> list[str]:
        """Event verbs written to the outbox (for one request when given), in order."""
        return [e.verb for e in await harness.outbox(self.db, key=request_id)]

    async def standing(self, t: Triple) -> str | None:
        async with self.db.sessions() as s:
            row = await s.get(Standing, (t.account_id, t.permission_set_arn, t.principal_id))
            return row.source if row is not None else None

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        wake(TIMER_CHANNEL)
        wake(WORK_CHANNEL)

    async def grant(self, request_id: uuid.UUID) -> Grant | None:
        async with self.db.sessions() as s:
            return await s.get(Grant, grant_id_for(request_id))  # type: ignore[no-any-return]

    async def passed_a_scan(self, publish: Any, seeded: SeededOrganisation) -> None:
        """A positive signal that the worker has scanned on the current clock: an approval
        whose window is already over (on a new triple) is settled, with no AWS call, only
        by a scan — so whatever the clock's last advance was going to make the worker do
        has been done once this returns."""
        now = self.clock.now()
        marker = approval(
            new_triple(seeded), start=now - timedelta(minutes=2), end=now - timedelta(minutes=1)
        )
        await publish(marker)
        settled = await self.wait_state(marker.snapshot.request_id, "ended")
        assert settled.end_reason == "expired"

    async def wait_state(self, request_id: uuid.UUID, *states: str, timeout: float = 60) -> Grant:
        async def check() -> bool:
            g = await self.grant(request_id)
            return g is not None and g.state in states

        await eventually(check, timeout=timeout, what=f"grant {request_id} in {states}")
        g = await self.grant(request_id)
        assert g is not None
        return g

    async def assignment(self, t: Triple) -> Assignment | None:
        async with self.db.sessions() as s:
            return await s.get(Assignment, (t.account_id, t.permission_set_arn, t.principal_id))  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def running(
    settings: GrantWorkerSettings,
    *,
    clock: ManualClock | None = None,
    standing: StandingProvider | None = None,
    hold_back: Callable[[Any], bool] = lambda _w: False,
    scope: set[tuple[str, str]] | None = None,
    cut_sessions: set[str] | None = None,
    session_durations: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    """grant-worker's workers in this process. `hold_back` names workers not to start yet
    (`Running.start_held` starts them), so a test can order them deterministically."""
    ctx = bootstrap(settings)
    await upgrade(ctx.db, SPEC.migrations)
    clock = clock or ManualClock(T0)

    async def scoped() -> set[tuple[str, str]]:
        return set(scope or ())

    build(
        ctx,
        settings,
        clock=clock,
        standing=standing,
        scope=scoped if scope else None,
        cut_sessions=(lambda name: name in cut_sessions) if cut_sessions else None,
        session_durations=_durations(session_durations) if session_durations else None,
    )
    try:
        # Tests cut workers off their database or AWS: a straggler is cancelled, not an error.
        async with harness.running_service(
            ctx, hold_back=hold_back, timeout=10, stragglers="cancel"
        ) as workers:
            yield Running(ctx, clock, workers)
    finally:
        await ctx.db.dispose()


def _durations(known: dict[str, str]) -> Callable[[str], Awaitable[str | None]]:
    async def duration(name: str) -> str | None:
        return known.get(name)

    return duration


async def caught_up(endpoint: KafkaEndpoint, group: str, topic: str, timeout: float = 60) -> None:
    """Wait until `group` committed offsets at the end of every partition of `topic`."""
    await harness.processed_past(endpoint, group, topic, timeout=timeout)


Factory = Callable[..., GrantWorkerSettings]


@pytest.fixture
def make_settings(
    pg_url: str, kafka: KafkaBroker, topic_prefix: str, proxy: AwsFaultProxy
) -> Factory:
    def make(**extra: Any) -> GrantWorkerSettings:
        base: dict[str, Any] = {"pg_url": pg_url, "aws": proxy.endpoint_url}
        base.update(extra)
        return settings_for(kafka=kafka, topic_prefix=topic_prefix, **base)

    return make


def decisions_topic(prefix: str) -> str:
    return f"{prefix}{Topics.DECISIONS}"


# ---- request-api's read model over the grants topic (statuses as users see them) ----


class ReadModel:
    def __init__(self, db: Database, consumer: Consumer) -> None:
        self.db = db
        self.consumer = consumer

    async def status(self, request_id: uuid.UUID) -> str | None:
        async with self.db.sessions() as s:
            row = await s.get(AccessRequest, request_id)
            return row.status if row is not None else None

    async def wait_status(self, request_id: uuid.UUID, status: str) -> None:
        async def check() -> bool:
            return await self.status(request_id) == status

        await eventually(check, what=f"request {request_id} {status} in the read model")


@pytest.fixture
async def read_model(
    postgres: PostgresCluster, kafka: KafkaBroker, topic_prefix: str, publish: Publisher
) -> AsyncIterator[ReadModel]:
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    async with harness.database(url, REQUEST_API.migrations) as db:
        consumer = Consumer(
            db,
            ConsumerConfig(
                name=f"{topic_prefix}request-api.read-model",
                topics=(f"{topic_prefix}{Topics.GRANTS}",),
                kafka=kafka.endpoint(),
                dlq_topic=f"{topic_prefix}{Topics.DLQ}",
                session_timeout_ms=6000,
                heartbeat_interval_ms=2000,
            ),
            project,
        )
        async with harness.running(consumer):
            yield ReadModel(db, consumer)


# ---- a database link that can be cut (a partition between one worker and PostgreSQL) ----


class DbLink:
    """A TCP forwarder in front of PostgreSQL. `cut()` terminates the sessions that came
    through it (`pg_terminate_backend`) and refuses new ones until `restore()`."""

    def __init__(self, upstream_port: int, admin_url: str) -> None:
        self.upstream_port = upstream_port
        self.admin_url = admin_url
        self.port = free_port()
        self.refusing = False
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []

    def url(self, database_url: str) -> str:
        return database_url.replace(f":{self.upstream_port}/", f":{self.port}/")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._pairs.append((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> int:
        """Drop every session through the link; returns how many backends were terminated."""
        self.refusing = True
        ports = [w.get_extra_info("sockname")[1] for _c, w in self._pairs]
        admin = Database(self.admin_url)
        async with admin.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE client_port = ANY(:ports)"
                ),
                {"ports": ports},
            )
            terminated = int(result.scalar_one())
            await conn.commit()
        await admin.dispose()
        for client, upstream in self._pairs:
            client.close()
            upstream.close()
        self._pairs.clear()
        return terminated

    def restore(self) -> None:
        self.refusing = False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


def out_of_band(
    sso: SSOAdminClient,
    seeded: SeededOrganisation,
    t: Triple,
    *,
    create: bool = True,
    principal_type: str = "USER",
    proxy: AwsFaultProxy | None = None,
) -> None:
    """Somebody else (a console user, another tool) changes AWS directly."""
    params: dict[str, Any] = {
        "InstanceArn": seeded.instance_arn,
        "TargetId": t.account_id,
        "TargetType": "AWS_ACCOUNT",
        "PermissionSetArn": t.permission_set_arn,
        "PrincipalType": principal_type,
        "PrincipalId": t.principal_id,
    }
    if create:
        sso.create_account_assignment(**params)
        if proxy is not None:
            proxy.note_provisioned(t.account_id, t.permission_set_arn)
    else:
        sso.delete_account_assignment(**params)
