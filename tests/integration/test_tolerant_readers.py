"""Events evolve: every event class, published by a newer writer with fields this release
does not know (at the top level and inside nested objects), is handled by each of its
consumers exactly as the same event without them — on PostgreSQL, with the real handlers.

A reader that refused unknown fields would dead-letter such an event during a rolling
upgrade: for `RevokeRequested` that is a lost revoke."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elevate_approval import consumers as approval_consumers
from elevate_approval.main import SPEC as APPROVAL
from elevate_approval.main import build
from elevate_approval.settings import ApprovalSettings
from elevate_audit_ingest.consumers import grants_handler
from elevate_audit_ingest.main import SPEC as AUDIT
from elevate_audit_ingest.service import CorrelationConfig
from elevate_core.app import ServiceContext
from elevate_core.clock import ManualClock
from elevate_core.db import Base, Database
from elevate_core.directory.aws import Directory
from elevate_core.events.base import Event, registered_events
from elevate_core.events.envelope import Envelope, decode, encode, new_envelope
from elevate_core.events.models import (
    ApprovalRequested,
    AuditTrailRead,
    BreakGlassReviewed,
    BreakGlassUsed,
    DecisionRecorded,
    DecisionRefused,
    DecisionSubmitted,
    DriftDetected,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    GrantScheduled,
    Person,
    RequestApproved,
    RequestCancelled,
    RequestExpired,
    RequestRejected,
    RequestSnapshot,
    RequestSubmitted,
    RevokeRequested,
    SessionCutRefused,
    StandingAssignmentDropped,
    StandingAssignmentRecorded,
)
from elevate_core.events.topics import Topics
from elevate_core.kafka.consumer import Handler
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox
from elevate_core.settings import Mode
from elevate_grant_worker import consumers as gw_consumers
from elevate_grant_worker.main import SPEC as GRANT_WORKER
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.postgres import PostgresCluster
from elevate_request_api.consumers import project
from elevate_request_api.main import SPEC as REQUEST_API
from sqlalchemy import func, select, text

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)
EXTRA = {"added_in_a_later_release": {"nested": [1, 2]}, "x_note": "newer writer"}


def story(seeded: SeededOrganisation) -> list[Event]:
    """One request's events, in the order they happen, covering every event class."""
    alice = Person(user_name="alice", user_id=seeded.user_ids["alice"], email="alice@e.x")
    grace = Person(user_name="grace", user_id=seeded.user_ids["grace"], email="grace@e.x")
    rid = uuid.uuid4()
    details: dict[str, Any] = {
        "request_id": rid,
        "requester": alice,
        "account_id": seeded.account_ids["payments-prod"],
        "account_name": "payments-prod",
        "permission_set_name": "AdministratorAccess",
        "permission_set_arn": seeded.permission_set_arns["AdministratorAccess"],
        "start": NOW,
        "end": NOW + timedelta(hours=1),
        "justification": "OPS-1 restart",
        "ticket": "OPS-1",
        "matched_rule": "sre-prod-admin",
        "policy_version": "v1",
    }
    snap = RequestSnapshot(**details, approvers=("grace",), approval_rule="two-sre-leads")
    grant = uuid.uuid5(uuid.NAMESPACE_URL, str(rid))
    triple = {
        "account_id": details["account_id"],
        "permission_set_arn": details["permission_set_arn"],
        "permission_set_name": "AdministratorAccess",
        "principal_id": alice.user_id,
    }
    return [
        RequestSubmitted(**details),
        ApprovalRequested(request_id=rid, approver_groups=("sre-leads",), required_approvals=1),
        DecisionSubmitted(request_id=rid, approver=grace, decision="approve", comment="ok"),
        DecisionRecorded(
            request_id=rid,
            approver=grace,
            decision="approve",
            approvals_so_far=1,
            required_approvals=1,
        ),
        DecisionRefused(request_id=rid, approver=alice, reason="requester"),
        RequestApproved(snapshot=snap),
        GrantScheduled(grant_id=grant, snapshot=snap, activates_at=NOW),
        GrantActivated(grant_id=grant, snapshot=snap, activated_at=NOW),
        BreakGlassUsed(
            request_id=rid,
            requester=alice,
            account_id=details["account_id"],
            permission_set_name="AdministratorAccess",
            start=NOW,
            end=NOW + timedelta(hours=1),
            justification="INC-9",
            matched_rule="break-glass",
            policy_version="v1",
        ),
        GrantRevocationFailed(grant_id=grant, snapshot=snap, error="throttled", attempts=5),
        RevokeRequested(request_id=rid, requested_by=alice, reason="done"),
        GrantEnded(
            grant_id=grant, snapshot=snap, reason="revoked", ended_at=NOW, assignment_removed=True
        ),
        GrantFailed(grant_id=grant, snapshot=snap, reason="AccessDenied"),
        RequestCancelled(request_id=rid, cancelled_by=alice),
        RequestRejected(request_id=rid, rejected_by=grace),
        RequestExpired(request_id=rid, pending_since=NOW, expired_at=NOW),
        BreakGlassReviewed(request_id=rid, reviewer=grace, comment="justified"),
        AuditTrailRead(reader=grace, resource="requests", format="csv", filters={"limit": "5"}),
        DriftDetected(**triple, kind="unexpected_assignment", action="reported"),
        StandingAssignmentRecorded(**triple, user_name="alice", source="baseline"),
        StandingAssignmentDropped(
            **triple, user_name="alice", source="baseline", reason="assignment_gone"
        ),
        SessionCutRefused(
            **triple, cut_at=NOW, reason="foreign_changes_pending", detail="not Elevate's"
        ),
    ]


def with_extras(value: Any) -> Any:
    """The event as a newer writer sends it: unknown fields on every object."""
    if isinstance(value, dict):
        return {**{k: with_extras(v) for k, v in value.items()}, **EXTRA}
    if isinstance(value, list):
        return [with_extras(v) for v in value]
    return value


def _envelope(event: Event, *, extras: bool) -> Envelope:
    env = new_envelope(event, source="elevate/test", subject=str(uuid.uuid4()), time=NOW)
    value, headers = encode(env)
    if extras:
        value = json.dumps(with_extras(json.loads(value))).encode()
    return decode(value, headers)


@dataclass
class Reader:
    name: str
    topics: tuple[Topics, ...]
    migrations: Path
    handler: Callable[[Database, ManualClock], Awaitable[Handler]]


async def _approval(db: Database, clock: ManualClock) -> Handler:
    settings = ApprovalSettings(
        mode=Mode.TEST,
        service_name="approval",
        database_url=db.url,
        policy_file=ROOT / "deploy/local/policy.yaml",
        aws_endpoint_url=_MOTO["url"],
    )
    ctx = ServiceContext(settings=settings, db=db)
    directory = Directory.from_region(region="us-east-1", endpoint_url=_MOTO["url"])
    return approval_consumers.requests_handler(
        build(ctx, directory=directory, clock=clock, expiry_gate=False)
    )


async def _gw_decisions(db: Database, clock: ManualClock) -> Handler:
    return gw_consumers.decisions_handler(outbox=Outbox(source="elevate/grant-worker"), clock=clock)


async def _gw_requests(db: Database, clock: ManualClock) -> Handler:
    return gw_consumers.requests_handler(clock=clock)


async def _read_model(db: Database, clock: ManualClock) -> Handler:
    return project


async def _audit_grants(db: Database, clock: ManualClock) -> Handler:
    config = CorrelationConfig(grace=timedelta(hours=1), wait=timedelta(minutes=10))
    return grants_handler(outbox=Outbox(source="elevate/audit-ingest"), config=config, clock=clock)


READERS = [
    Reader("approval", (Topics.REQUESTS,), APPROVAL.migrations, _approval),
    Reader("grant-worker.decisions", (Topics.DECISIONS,), GRANT_WORKER.migrations, _gw_decisions),
    Reader("grant-worker.requests", (Topics.REQUESTS,), GRANT_WORKER.migrations, _gw_requests),
    Reader(
        "request-api",
        (Topics.REQUESTS, Topics.DECISIONS, Topics.GRANTS),
        REQUEST_API.migrations,
        _read_model,
    ),
    Reader("audit-ingest.grants", (Topics.GRANTS,), AUDIT.migrations, _audit_grants),
]
_MOTO: dict[str, str] = {}


@pytest.fixture(scope="module")
def org(moto_endpoint: str) -> SeededOrganisation:
    _MOTO["url"] = moto_endpoint
    return seed_organisation(moto_endpoint)


def test_the_story_covers_every_event_class(org: SeededOrganisation) -> None:
    assert {type(e).ce_type for e in story(org)} == set(registered_events())


async def _run(
    reader: Reader, postgres: PostgresCluster, events: list[Event], *, extras: bool
) -> tuple[list[str], dict[str, int]]:
    db = Database(postgres.create_database(f"t_{uuid.uuid4().hex[:12]}"))
    await upgrade(db, reader.migrations)
    handler = await reader.handler(db, ManualClock(NOW))
    outcomes: list[str] = []
    for event in events:
        try:
            async with db.transaction() as session:
                await handler(session, _envelope(event, extras=extras))
            outcomes.append(f"{type(event).__name__}: ok")
        except Exception as exc:
            outcomes.append(f"{type(event).__name__}: {type(exc).__name__}")
    counts: dict[str, int] = {}
    async with db.sessions() as session:
        for table in Base.metadata.sorted_tables:
            exists = await session.execute(text("SELECT to_regclass(:t)"), {"t": table.name})
            if exists.scalar() is not None:
                counts[table.name] = int(
                    (await session.execute(select(func.count()).select_from(table))).scalar_one()
                )
    await db.dispose()
    return outcomes, counts


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
async def test_unknown_fields_change_nothing_for(
    reader: Reader, org: SeededOrganisation, postgres: PostgresCluster
) -> None:
    events = [e for e in story(org) if e.topic in reader.topics]
    assert events
    plain = await _run(reader, postgres, events, extras=False)
    newer = await _run(reader, postgres, events, extras=True)
    assert newer == plain
    assert not any("EnvelopeError" in o for o in newer[0])
    handled = [o for o in newer[0] if o.endswith(": ok")]
    assert len(handled) >= len(events) // 2, f"the story barely reached {reader.name}: {newer}"
