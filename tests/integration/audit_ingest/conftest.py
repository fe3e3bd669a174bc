"""audit-ingest against the real broker, PostgreSQL and the shared moto server: each test
gets its own bucket, queue and topic prefix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from elevate_audit_ingest.main import create_app
from elevate_audit_ingest.models import PendingRecord, RecordDigest
from elevate_audit_ingest.settings import AuditSettings
from elevate_core.db import Database
from elevate_core.events.base import Event
from elevate_core.events.models import GrantActivated, Person, RequestSnapshot
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import OutboxMessage
from elevate_local.kafka import KafkaBroker
from elevate_local.simulate_activity import session_records
from sqlalchemy import func, select

from tests import harness
from tests import trail as trail_module

if TYPE_CHECKING:
    pass

ACCOUNT = "210987654321"
PERMISSION_SET = "AdministratorAccess"


class Trail(trail_module.Trail):
    """This suite's trail: its log files are of ACCOUNT unless a test says otherwise."""

    def deliver(
        self,
        records: Sequence[dict[str, Any]],
        *,
        account_id: str = ACCOUNT,
        bucket: str | None = None,
        at: datetime | None = None,
        body: bytes | None = None,
    ) -> str:
        return super().deliver(records, account_id=account_id, bucket=bucket, at=at, body=body)


@pytest.fixture(autouse=True)
async def _catalog(catalog: str) -> str:
    """Every test here runs the service against its own topics (tests/integration)."""
    return catalog


@pytest.fixture
def trail(moto_endpoint: str) -> Iterator[Trail]:
    made = Trail.create(moto_endpoint)
    yield made
    made.delete_queue()


@pytest.fixture
def topics(catalog: str) -> dict[Topics, str]:
    return {t: f"{catalog}{t.value}" for t in Topics}


def settings_env(
    *, pg_url: str, kafka: KafkaBroker, topic_prefix: str, moto_endpoint: str, trail: Trail
) -> dict[str, Any]:
    return {
        "mode": "test",
        "service_name": "audit-ingest",
        "database_url": pg_url,
        **kafka.endpoint(Principal.AUDIT_INGEST).as_settings(),
        "topic_prefix": topic_prefix,
        "aws_endpoint_url": moto_endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "cloudtrail_queue": trail.queue_url,
        "cloudtrail_wait_seconds": 1,
        "cloudtrail_visibility_timeout": 3,
        "correlation_wait": timedelta(seconds=2),
        "log_json": False,
        # A fixed scope: these tests use a made-up account the example policy does not
        # name (the policy-derived scope has tests of its own, in test_scope.py).
        "managed_permission_sets": PERMISSION_SET,
    }


@asynccontextmanager
async def running_service(**settings: Any) -> AsyncIterator[None]:
    """The real app with all its workers, in this process, for the test's duration."""
    app = create_app(AuditSettings(**settings))
    async with app.router.lifespan_context(app):
        yield


def snapshot(
    *, user: str, start: datetime, end: datetime, account: str = ACCOUNT
) -> RequestSnapshot:
    return RequestSnapshot(
        request_id=uuid.uuid4(),
        requester=Person(user_name=user, user_id=f"uid-{user}", email=f"{user}@example.com"),
        account_id=account,
        permission_set_name=PERMISSION_SET,
        permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-admin",
        start=start,
        end=end,
        justification="INC-7: payment queue stuck",
        matched_rule="sre-prod",
        policy_version="v1",
        approvers=("bob",),
    )


def activated(snap: RequestSnapshot, at: datetime) -> GrantActivated:
    return GrantActivated(grant_id=uuid.uuid4(), snapshot=snap, activated_at=at)


async def publish(endpoint: KafkaEndpoint, topic: str, *events: Event) -> None:
    """grant-worker's events, as grant-worker publishes them."""
    envelopes = [harness.envelope(e, source="elevate/grant-worker") for e in events]
    await harness.publish(endpoint, topic, *envelopes)


async def alice_session(
    kafka: KafkaBroker, topics: dict[Topics, str], calls: Sequence[Any]
) -> tuple[RequestSnapshot, list[dict[str, Any]]]:
    """Alice's grant (active since 30 minutes, published on the grants topic) and the
    records of her session in it (begun 20 minutes ago, one call per entry of `calls`)."""
    now = datetime.now(UTC).replace(microsecond=0)
    alice = snapshot(user="alice", start=now - timedelta(minutes=30), end=now + timedelta(hours=1))
    await publish(
        kafka.endpoint(), topics[Topics.GRANTS], activated(alice, now - timedelta(minutes=30))
    )
    records = session_records(
        user="alice",
        account_id=ACCOUNT,
        permission_set=PERMISSION_SET,
        start=now - timedelta(minutes=20),
        calls=calls,
    )
    return alice, records


async def publish_raw(endpoint: KafkaEndpoint, topic: str, *values: bytes) -> None:
    await harness.publish_raw(endpoint, topic, *values, key=ACCOUNT.encode())


async def count(db: Database, stmt: Any) -> int:
    async with db.sessions() as session:
        return int((await session.execute(stmt)).scalar_one())


async def settled(db: Database, trail: Trail, *, records: int) -> bool:
    """Every notice handled, `records` distinct CloudTrail records processed, none waiting
    for its grant, and every OCSF record sent: whatever the run was going to emit, it has."""
    processed = select(func.count()).select_from(RecordDigest)  # one claim per record
    unsent = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
    return (
        trail.queued() == 0
        and await count(db, processed) == records
        and await count(db, select(func.count()).select_from(PendingRecord)) == 0
        and await count(db, unsent) == 0
    )
