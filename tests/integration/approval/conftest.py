"""approval against real PostgreSQL, the seeded moto organisation and (where the test
says so) the real Kafka broker. Nothing is mocked: the directory is the real
`Directory` over moto, the policy a real file watched by the real `PolicyWatcher`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elevate_approval import consumers
from elevate_approval.main import SPEC, build
from elevate_approval.models import ApprovalRequest, DecisionLogEntry
from elevate_approval.service import Deps
from elevate_approval.settings import ApprovalSettings
from elevate_core.app import ServiceContext
from elevate_core.clock import Clock, ManualClock
from elevate_core.db import Database
from elevate_core.directory.aws import Directory
from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import (
    DecisionSubmitted,
    Person,
    RequestCancelled,
    RequestSubmitted,
)
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.consumer import Handler
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.settings import Mode
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from sqlalchemy import select

from tests import harness

POLICY = """\
schema_version: 1
auditor_groups: [auditors]
admin_groups: [elevate-admins]
approval_rules:
  - {{name: auto, auto_approve: true}}
  - {{name: one-sre-lead, approver_groups: [sre-leads], pending_timeout: {one}}}
  - name: two-sre-leads
    approver_groups: [sre-leads]
    required_approvals: {two_required}
    pending_timeout: {two}
{extra_rules}
eligibility:
  - {{name: engineers-sandbox-readonly, principals: {{groups: [engineers]}},
     accounts: [{{ou: Sandbox}}], permission_sets: [ReadOnlyAccess], max_duration: 8h,
     approval: auto}}
  - {{name: sre-prod-admin, principals: {{groups: [sre]}}, accounts: [{{ou: Workloads/Prod}}],
     permission_sets: [AdministratorAccess], max_duration: 4h, approval: one-sre-lead}}
  - {{name: sre-prod-database, principals: {{groups: [sre]}},
     accounts: [{{ou: Workloads/Prod}}], permission_sets: [DatabaseAdmin], max_duration: 2h,
     approval: two-sre-leads}}
  - name: sre-break-glass
    break_glass: true
    principals: {{groups: [sre]}}
    accounts: ["*"]
    exclude: [{{ou: Security}}]
    permission_sets: [AdministratorAccess]
    max_duration: 1h
    review_groups: [sre-leads, auditors]
{extra_eligibility}
"""


def write_policy(
    path: Path,
    *,
    one: str = "4h",
    two: str = "8h",
    two_required: int = 2,
    extra_rules: str = "",
    extra_eligibility: str = "",
) -> Path:
    path.write_text(
        POLICY.format(
            one=one,
            two=two,
            two_required=two_required,
            extra_rules=extra_rules,
            extra_eligibility=extra_eligibility,
        )
    )
    return path


@pytest.fixture(autouse=True)
async def _catalog(catalog: str) -> str:
    """Every test here runs the service against its own topics (tests/integration)."""
    return catalog


@pytest.fixture(scope="session")
def seeded(moto_endpoint: str) -> SeededOrganisation:
    return seed_organisation(moto_endpoint)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy.yaml")


@pytest.fixture
async def approval_db(pg_url: str) -> AsyncIterator[Database]:
    async with harness.database(pg_url, SPEC.migrations) as db:
        yield db


def settings_for(
    *,
    pg_url: str,
    policy_file: Path,
    moto_endpoint: str,
    kafka: KafkaEndpoint | None = None,
    topic_prefix: str = "",
) -> ApprovalSettings:
    """approval's settings; without `kafka`, a Kafka nobody listens at."""
    return ApprovalSettings(
        mode=Mode.TEST,
        service_name="approval",
        database_url=pg_url,
        **(kafka or KafkaEndpoint("127.0.0.1:9")).as_settings(),
        **harness.event_settings(Principal.APPROVAL),
        topic_prefix=topic_prefix,
        policy_file=policy_file,
        aws_endpoint_url=moto_endpoint,
        policy_poll_seconds=0.2,
    )


def directory_for(moto_endpoint: str) -> Directory:
    return Directory.from_region(region="us-east-1", endpoint_url=moto_endpoint)


@dataclass
class Requests:
    """Builds the events request-api would publish for the seeded organisation."""

    seeded: SeededOrganisation
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def person(self, name: str) -> Person:
        return Person(
            user_name=name, user_id=self.seeded.user_ids[name], email=f"{name}@elevate.example"
        )

    def submitted(
        self,
        permission_set: str,
        *,
        requester: str = "alice",
        account: str = "payments-prod",
        break_glass: bool = False,
    ) -> RequestSubmitted:
        start = self.now()
        return RequestSubmitted(
            request_id=uuid.uuid4(),
            requester=self.person(requester),
            account_id=self.seeded.account_ids[account],
            account_name=account,
            permission_set_name=permission_set,
            permission_set_arn=self.seeded.permission_set_arns.get(
                permission_set, f"arn:aws:sso:::permissionSet/ssoins-x/ps-{permission_set}"
            ),
            start=start,
            end=start + timedelta(hours=1),
            justification="OPS-7 failover drill",
            ticket="OPS-7",
            matched_rule="sre-prod-database",
            policy_version="as-submitted",
            break_glass=break_glass,
        )

    def decision(
        self, request: RequestSubmitted, approver: str | Person, approve: bool = True
    ) -> DecisionSubmitted:
        who = approver if isinstance(approver, Person) else self.person(approver)
        return DecisionSubmitted(
            request_id=request.request_id,
            approver=who,
            decision="approve" if approve else "reject",
            comment=f"{who.user_name} says {'yes' if approve else 'no'}",
        )

    def cancelled(self, request: RequestSubmitted) -> RequestCancelled:
        return RequestCancelled(
            request_id=request.request_id, cancelled_by=request.requester, reason="not needed"
        )


@pytest.fixture
def requests(seeded: SeededOrganisation) -> Requests:
    return Requests(seeded)


def envelope(event: Event, *, subject: uuid.UUID, time: datetime | None = None) -> Envelope:
    return harness.envelope(event, source="elevate/request-api", subject=str(subject), at=time)


@dataclass
class InProcess:
    """approval's handlers over one database, driven directly (no Kafka)."""

    db: Database
    deps: Deps
    handler: Handler
    clock: ManualClock
    ctx: ServiceContext

    async def feed(self, event: Event, *, subject: uuid.UUID, at: datetime | None = None) -> str:
        env = envelope(event, subject=subject, time=at or self.clock.now())
        async with self.db.transaction() as session:
            await self.handler(session, env)
        return env.id

    async def emitted(self, request_id: uuid.UUID | None = None) -> list[tuple[str, Any]]:
        """(class name, data) of every outbox event, in order."""
        return [(e.name, e.data) for e in await harness.outbox(self.db, key=request_id)]

    async def row(self, request_id: uuid.UUID) -> ApprovalRequest:
        async with self.db.sessions() as session:
            return (
                await session.execute(
                    select(ApprovalRequest).where(ApprovalRequest.request_id == str(request_id))
                )
            ).scalar_one()

    async def log(self, request_id: uuid.UUID) -> list[DecisionLogEntry]:
        async with self.db.sessions() as session:
            return list(
                (
                    await session.execute(
                        select(DecisionLogEntry)
                        .where(DecisionLogEntry.request_id == str(request_id))
                        .order_by(DecisionLogEntry.id)
                    )
                )
                .scalars()
                .all()
            )


@pytest.fixture
async def approval(
    approval_db: Database, pg_url: str, policy_file: Path, moto_endpoint: str, seeded: object
) -> InProcess:
    settings = settings_for(pg_url=pg_url, policy_file=policy_file, moto_endpoint=moto_endpoint)
    ctx = ServiceContext(settings=settings, db=approval_db)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    deps = build(ctx, directory=directory_for(moto_endpoint), clock=clock, expiry_gate=False)
    return InProcess(approval_db, deps, consumers.requests_handler(deps), clock, ctx)


@asynccontextmanager
async def running_service(
    ctx: ServiceContext, *, clock: Clock | None = None
) -> AsyncIterator[ServiceContext]:
    """All of approval's workers (consumer, relay, timers, policy) in this process."""
    async with harness.running_service(ctx):
        yield ctx


class DecisionsReader(harness.TopicReader):
    """Reads `elevate.decisions.v1` from the beginning and keeps everything it saw."""

    def __init__(self, endpoint: KafkaEndpoint, topic: str) -> None:
        super().__init__(endpoint, topic)
        self.records: list[tuple[str, str, Any]] = []  # (class name, ce_id, data)

    async def __aenter__(self) -> DecisionsReader:
        await super().__aenter__()
        return self

    async def poll(self) -> list[Any]:
        new = await super().poll()
        for record in new:
            headers = harness.headers_of(record)
            name = harness.event_name(headers["ce_type"])
            self.records.append((name, headers["ce_id"], harness.data_of(record)))
        return new

    def of(self, request_id: uuid.UUID, name: str | None = None) -> list[tuple[str, str, Any]]:
        rid = str(request_id)
        return [
            r
            for r in self.records
            if (r[2].get("request_id") or r[2].get("snapshot", {}).get("request_id")) == rid
            and (name is None or r[0] == name)
        ]


async def produce(endpoint: KafkaEndpoint, topic: str, *envelopes: Envelope) -> None:
    """Publish as request-api would: CloudEvents binary mode, key = request id."""
    await harness.publish(endpoint, topic, *envelopes)
