"""grant-worker against real Kafka, PostgreSQL and moto behind the fault-injecting proxy.

The worker runs in-process (its consumers, timers, outbox relay and assignment worker as
tasks) with a ManualClock; only the crash tests start it as a process. All tests share one
moto server, so each test uses principals of its own (fresh UUIDs) and asserts per grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from elevate_core.app import ServiceContext, bootstrap
from elevate_core.clock import ManualClock
from elevate_core.events.base import Event
from elevate_core.events.envelope import encode, new_envelope
from elevate_core.events.models import Person, RequestApproved, RequestSnapshot
from elevate_core.events.topics import Topics
from elevate_core.kafka.admin import ensure_topics
from elevate_core.kafka.producer import idempotent_producer
from elevate_core.migrate import upgrade
from elevate_core.notify import wake
from elevate_core.outbox import OutboxMessage
from elevate_core.timers import CHANNEL as TIMER_CHANNEL
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.main import SPEC, StandingProvider, build
from elevate_grant_worker.models import Assignment, Grant
from elevate_grant_worker.service import WORK_CHANNEL, grant_id_for
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from sqlalchemy import select

from tests.helpers import eventually

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


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
        "kafka_bootstrap_servers": kafka.bootstrap,
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
    }
    values.update(extra)
    return GrantWorkerSettings(**values)


class Publisher:
    def __init__(self, kafka: KafkaBroker, prefix: str) -> None:
        self.kafka = kafka
        self.prefix = prefix

    async def __call__(self, *events: Event) -> None:
        producer = idempotent_producer(self.kafka.bootstrap, client_id="test-publisher")
        await producer.start()
        try:
            for event in events:
                subject = str(getattr(event, "request_id", None) or event.snapshot.request_id)  # type: ignore[attr-defined]
                value, headers = encode(new_envelope(event, source="elevate/test", subject=subject))
                await producer.send_and_wait(
                    f"{self.prefix}{event.topic}",
                    value=value,
                    key=subject.encode(),
                    headers=headers,
                )
        finally:
            await producer.stop()


@pytest.fixture
async def publish(kafka: KafkaBroker, topic_prefix: str) -> Publisher:
    await ensure_topics(kafka.bootstrap, prefix=topic_prefix)
    return Publisher(kafka, topic_prefix)


@dataclass
class Running:
    ctx: ServiceContext
    clock: ManualClock
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self) -> Any:
        return self.ctx.db

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        wake(TIMER_CHANNEL)
        wake(WORK_CHANNEL)

    async def grant(self, request_id: uuid.UUID) -> Grant | None:
        async with self.db.sessions() as s:
            return await s.get(Grant, grant_id_for(request_id))  # type: ignore[no-any-return]

    async def wait_state(self, request_id: uuid.UUID, *states: str, timeout: float = 60) -> Grant:
        async def check() -> bool:
            g = await self.grant(request_id)
            return g is not None and g.state in states

        await eventually(check, timeout=timeout, what=f"grant {request_id} in {states}")
        g = await self.grant(request_id)
        assert g is not None
        return g

    async def events(self, request_id: uuid.UUID | None = None) -> list[str]:
        """ce_types written to the outbox (for one request when given), in order."""
        async with self.db.sessions() as s:
            rows = (await s.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
            out = []
            for row in rows:
                if request_id is None or row.key == str(request_id):
                    out.append(dict(row.headers)["ce_type"].split(".")[-2])
            return out

    async def assignment(self, t: Triple) -> Assignment | None:
        async with self.db.sessions() as s:
            return await s.get(Assignment, (t.account_id, t.permission_set_arn, t.principal_id))  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def running(
    settings: GrantWorkerSettings,
    *,
    clock: ManualClock | None = None,
    standing: StandingProvider | None = None,
) -> AsyncIterator[Running]:
    ctx = bootstrap(settings)
    await upgrade(ctx.db, SPEC.migrations)
    clock = clock or ManualClock(T0)
    build(ctx, settings, clock=clock, standing=standing)
    for hook in ctx.startup:
        await hook()
    run = Running(ctx, clock)
    run.tasks = [asyncio.create_task(w.run()) for w in ctx.workers]
    try:
        yield run
    finally:
        for w in ctx.workers:
            await w.stop()
        _done, pending = await asyncio.wait(run.tasks, timeout=10)
        for t in pending:
            t.cancel()
        await ctx.db.dispose()


async def caught_up(bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
    """Wait until `group` committed offsets at the end of every partition of `topic`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)

        async def check() -> bool:
            for tp in tps:
                if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                    return False
            return True

        await eventually(check, timeout=timeout, what=f"{group} caught up on {topic}")
    finally:
        await consumer.stop()


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
