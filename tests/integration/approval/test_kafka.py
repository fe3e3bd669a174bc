"""approval against the real Kafka broker and PostgreSQL: the service's own workers
(consumer, outbox relay, timers, policy watcher) in this process, fed as request-api
feeds them, read back from `elevate.decisions.v1`."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elevate_approval.main import build
from elevate_approval.models import DecisionLogEntry
from elevate_approval.settings import ApprovalSettings
from elevate_core.app import ServiceContext
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_core.outbox import OutboxMessage
from elevate_core.timers import Timer
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port, wait_for_port
from sqlalchemy import func, select

from tests import harness
from tests.harness import data_of, headers_of, outbox, read_to_end, spawn_service
from tests.integration.approval.conftest import (
    DecisionsReader,
    Requests,
    directory_for,
    envelope,
    produce,
    running_service,
    settings_for,
    write_policy,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(
    approval_db: Database,
    pg_url: str,
    policy_file: Path,
    moto_endpoint: str,
    kafka: KafkaBroker,
    topic_prefix: str,
    seeded: object,
) -> AsyncIterator[ServiceContext]:
    settings = settings_for(
        pg_url=pg_url,
        policy_file=policy_file,
        moto_endpoint=moto_endpoint,
        kafka=kafka.endpoint(Principal.APPROVAL),
        topic_prefix=topic_prefix,
    )
    ctx = ServiceContext(settings=settings, db=approval_db)
    build(ctx, directory=directory_for(moto_endpoint))
    async with running_service(ctx):
        yield ctx


def topics(kafka: KafkaBroker, prefix: str) -> tuple[str, str]:
    return f"{prefix}{Topics.REQUESTS}", f"{prefix}{Topics.DECISIONS}"


async def test_two_of_three_approves_exactly_once_whatever_is_repeated(
    service: ServiceContext, kafka: KafkaBroker, topic_prefix: str, requests: Requests
) -> None:
    requests_topic, decisions_topic = topics(kafka, topic_prefix)
    req = requests.submitted("DatabaseAdmin")
    rid = req.request_id
    bob = envelope(requests.decision(req, "bob"), subject=rid)
    await produce(
        kafka.endpoint(),
        requests_topic,
        envelope(req, subject=rid),
        bob,
        bob,  # the same event (same ce_id) delivered twice
        envelope(requests.decision(req, "bob"), subject=rid),  # bob again, a new event
        envelope(requests.decision(req, "alice"), subject=rid),  # her own request
        envelope(requests.decision(req, "frank"), subject=rid),  # the second distinct lead
        envelope(requests.decision(req, "grace"), subject=rid),  # too late: approved
        bob,  # and the first one once more, after the outcome
    )
    async with DecisionsReader(kafka.endpoint(), decisions_topic) as reader:
        await reader.wait_for(
            lambda: any(
                r[2]["approver"]["user_name"] == "grace" for r in reader.of(rid, "DecisionRefused")
            ),
            what="grace's late decision answered",
        )
        await reader.poll()
    names = [r[0] for r in reader.of(rid)]
    assert names.count("RequestApproved") == 1
    assert names.count("ApprovalRequested") == 1
    assert names.count("DecisionRecorded") == 2
    assert [
        (r[2]["approver"]["user_name"], r[2]["reason"]) for r in reader.of(rid, "DecisionRefused")
    ] == [("bob", "already_decided"), ("alice", "requester"), ("grace", "request_final")]
    [(_, _, approved)] = reader.of(rid, "RequestApproved")
    assert approved["snapshot"]["approvers"] == ["bob", "frank"]
    assert (
        approved["snapshot"]["permission_set_arn"]
        == (requests.seeded.permission_set_arns["DatabaseAdmin"])
    )

    async with service.db.sessions() as s:
        approvals = (
            await s.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.key == str(rid), OutboxMessage.value.contains(b"snapshot"))
            )
        ).scalar_one()
        counted = (
            await s.execute(
                select(func.count())
                .select_from(DecisionLogEntry)
                .where(
                    DecisionLogEntry.request_id == str(rid), DecisionLogEntry.outcome == "counted"
                )
            )
        ).scalar_one()
    assert (approvals, counted) == (1, 2)


async def test_cancel_before_the_deciding_approval_and_after_it(
    service: ServiceContext, kafka: KafkaBroker, topic_prefix: str, requests: Requests
) -> None:
    requests_topic, decisions_topic = topics(kafka, topic_prefix)
    before = requests.submitted("AdministratorAccess")
    after = requests.submitted("AdministratorAccess")
    await produce(
        kafka.endpoint(),
        requests_topic,
        envelope(before, subject=before.request_id),
        envelope(requests.cancelled(before), subject=before.request_id),
        envelope(requests.decision(before, "bob"), subject=before.request_id),
        envelope(after, subject=after.request_id),
        envelope(requests.decision(after, "bob"), subject=after.request_id),
        envelope(requests.cancelled(after), subject=after.request_id),
        envelope(requests.decision(after, "frank"), subject=after.request_id),
    )
    async with DecisionsReader(kafka.endpoint(), decisions_topic) as reader:
        await reader.wait_for(
            lambda: (
                bool(reader.of(before.request_id, "DecisionRefused"))
                and bool(reader.of(after.request_id, "DecisionRefused"))
            ),
            what="the decisions after each cancel answered",
        )
        await reader.poll()
    assert [r[0] for r in reader.of(before.request_id)] == ["ApprovalRequested", "DecisionRefused"]
    assert reader.of(before.request_id, "DecisionRefused")[0][2]["reason"] == "request_final"
    assert [r[0] for r in reader.of(after.request_id)] == [
        "ApprovalRequested",
        "DecisionRecorded",
        "RequestApproved",
        "DecisionRefused",  # frank, after the cancel
    ]

    async with service.db.sessions() as s:
        from elevate_approval.models import ApprovalRequest

        rows = {r.request_id: r for r in (await s.execute(select(ApprovalRequest))).scalars().all()}
        timers = (await s.execute(select(func.count()).select_from(Timer))).scalar_one()
    cancelled_first = rows[str(before.request_id)]
    assert (cancelled_first.status, cancelled_first.approved_at) == ("cancelled", None)
    approved_then_cancelled = rows[str(after.request_id)]
    assert approved_then_cancelled.status == "cancelled"
    assert approved_then_cancelled.approved_at is not None
    assert approved_then_cancelled.cancelled_at is not None
    assert approved_then_cancelled.approved_at <= approved_then_cancelled.cancelled_at
    assert timers == 0  # neither request can expire any more


def _service_process(
    *,
    pg_url: str,
    kafka: KafkaBroker,
    prefix: str,
    policy: Path,
    moto: str,
    fail_points: str = "",
    clock_offset: timedelta = timedelta(0),
) -> tuple[subprocess.Popen[bytes], int]:
    """approval as a process whose clock runs `clock_offset` ahead of the wall clock."""
    port = free_port()
    settings = {
        "http_port": port,
        "database_url": pg_url,
        **kafka.endpoint(Principal.APPROVAL).as_settings(),
        **harness.event_settings(Principal.APPROVAL),
        "topic_prefix": prefix,
        "policy_file": policy,
        "aws_endpoint_url": moto,
        "fail_points": fail_points,
    }
    args = ["--clock-offset", str(clock_offset.total_seconds())]
    proc = spawn_service("tests.integration.approval.service_process", settings, args=args)
    return proc, port


async def _expiries(db: Database, request_id: str) -> tuple[int, int]:
    """(RequestExpired outbox rows, expire log entries) for the request."""
    async with db.sessions() as s:
        rows = (
            await s.execute(select(OutboxMessage.headers).where(OutboxMessage.key == request_id))
        ).scalars()
        events = sum(dict(h).get("ce_type") == "io.elevate.request.expired.v1" for h in rows)
        logged = (
            await s.execute(
                select(func.count())
                .select_from(DecisionLogEntry)
                .where(
                    DecisionLogEntry.request_id == request_id, DecisionLogEntry.outcome == "expired"
                )
            )
        ).scalar_one()
    return events, int(logged)


async def test_pending_request_expires_exactly_once_across_sigkills(
    approval_db: Database,
    pg_url: str,
    tmp_path: Path,
    moto_endpoint: str,
    kafka: KafkaBroker,
    topic_prefix: str,
    requests: Requests,
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", one="1h")
    requests_topic, decisions_topic = topics(kafka, topic_prefix)
    launch = dict(
        pg_url=pg_url, kafka=kafka, prefix=topic_prefix, policy=policy, moto=moto_endpoint
    )
    req = requests.submitted("AdministratorAccess")
    rid = str(req.request_id)

    # Pending, then killed: an hour before its deadline by this process's clock.
    first, port = _service_process(**launch)  # type: ignore[arg-type]
    try:
        wait_for_port(port, timeout=60, what="approval")
        submitted_at = datetime.now(UTC)
        await produce(
            kafka.endpoint(),
            requests_topic,
            envelope(req, subject=req.request_id, time=submitted_at),
        )
        async with DecisionsReader(kafka.endpoint(), decisions_topic) as reader:
            await reader.wait_for(
                lambda: bool(reader.of(req.request_id, "ApprovalRequested")),
                what="the request pending",
            )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert await _expiries(approval_db, rid) == (0, 0)
    async with approval_db.sessions() as s:
        [(due, fired)] = (
            await s.execute(select(Timer.due_at, Timer.fired_at).where(Timer.key == rid))
        ).all()
    # The timer fires the grace after the deadline; the expiry is dated at the deadline.
    grace = timedelta(seconds=ApprovalSettings.model_fields["expiry_grace_seconds"].default)
    assert (due, fired) == (submitted_at + timedelta(hours=1) + grace, None)

    # Restarted past the deadline (its clock an hour ahead), it dies inside the expiry
    # handler: the fail point after the handler killing it shows the handler ran.
    later = timedelta(hours=1, minutes=1)
    crashed, _ = _service_process(
        **launch,  # type: ignore[arg-type]
        fail_points="timers.after_handler",
        clock_offset=later,
    )
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    assert await _expiries(approval_db, rid) == (0, 0)

    last, port = _service_process(**launch, clock_offset=later)  # type: ignore[arg-type]
    try:
        async with DecisionsReader(kafka.endpoint(), decisions_topic) as reader:
            await reader.wait_for(
                lambda: bool(reader.of(req.request_id, "RequestExpired")), what="the expiry"
            )
            wait_for_port(port, timeout=60, what="approval")
    finally:
        last.terminate()
        last.wait(timeout=30)
    assert await _expiries(approval_db, rid) == (1, 1)
    expired_rows = [e for e in await outbox(approval_db, key=rid) if e.name == "RequestExpired"]
    assert [e.sent for e in expired_rows] == [True]
    # Everything the relay sent is now on the topic: exactly one expiry there too.
    on_topic = [
        r for r in await read_to_end(kafka.endpoint(), decisions_topic) if r.key == rid.encode()
    ]
    expired = [data_of(r) for r in on_topic if headers_of(r)["ce_type"].endswith("expired.v1")]
    assert len(expired) == 1
    assert datetime.fromisoformat(expired[0]["pending_since"]) == submitted_at
    assert datetime.fromisoformat(expired[0]["expired_at"]) == due - grace
