"""approval re-checks every request before it decides, with its own policy copy and the
real directory over moto: a well-formed submission the policy does not allow — as a
misconfigured cluster would let anyone publish — is rejected by the system with the
reason code, never put to approvers and never approved; so is a pending request that
fails the re-check when a decision comes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from elevate_approval.main import build
from elevate_core.app import ServiceContext
from elevate_core.db import Database
from elevate_core.events.models import Person, RequestSubmitted
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.kafka import KafkaBroker
from prometheus_client import REGISTRY

from tests import harness
from tests.integration.approval.conftest import (
    DecisionsReader,
    InProcess,
    Requests,
    directory_for,
    running_service,
    settings_for,
    write_policy,
)

pytestmark = pytest.mark.integration

YEAR = timedelta(days=365)


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "elevate_recheck_refused_total", {"service": "approval", "reason": reason}
    )
    return value or 0.0


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


def forged(requests: Requests) -> dict[str, tuple[RequestSubmitted, str]]:
    """Well-formed submissions the policy does not allow, with the reason code each must
    be rejected for."""
    seeded = requests.seeded
    admin_arn = seeded.permission_set_arns["AdministratorAccess"]

    def changed(req: RequestSubmitted, **update: object) -> RequestSubmitted:
        return req.model_copy(update=update)

    admin = requests.submitted("AdministratorAccess")
    read_only = requests.submitted("ReadOnlyAccess", requester="erin", account="sandbox-shared")
    ghost = Person(user_name=f"ghost-{uuid.uuid4().hex[:8]}", user_id=str(uuid.uuid4()))
    return {
        "ten-year window": (
            changed(admin, end=admin.start + 10 * YEAR),
            "duration_too_long",
        ),
        "management account": (
            changed(
                requests.submitted("AdministratorAccess"),
                account_id=seeded.management_account_id,
                account_name="management",
            ),
            "management_account",
        ),
        "ARN not the name's": (
            changed(
                requests.submitted("DatabaseAdmin"),
                permission_set_arn=f"{admin_arn.rsplit('/', 1)[0]}/ps-forged0000000000",
            ),
            "permission_set_arn_mismatch",
        ),
        "user not in the Identity Store": (
            changed(requests.submitted("AdministratorAccess"), requester=ghost),
            "user_unknown",
        ),
        # The case the issue names: approved as sent before (the rule auto-approves).
        "read-only request with the admin ARN for 365 days": (
            changed(read_only, permission_set_arn=admin_arn, end=read_only.start + YEAR),
            "permission_set_arn_mismatch",
        ),
    }


async def test_submissions_that_fail_the_recheck_are_rejected_with_the_reason(
    service: ServiceContext, kafka: KafkaBroker, topic_prefix: str, requests: Requests
) -> None:
    cases = forged(requests)
    before = {code: refused(code) for _, code in cases.values()}
    await harness.publish_events(
        kafka.endpoint(), *(req for req, _ in cases.values()), prefix=topic_prefix
    )
    decisions = f"{topic_prefix}{Topics.DECISIONS}"
    async with DecisionsReader(kafka.endpoint(), decisions) as reader:
        await reader.wait_for(
            lambda: all(reader.of(req.request_id) for req, _ in cases.values()),
            what="every forged submission answered",
        )
        await reader.poll()
    for name, (req, code) in cases.items():
        answers = reader.of(req.request_id)
        assert [a[0] for a in answers] == ["RequestRejected"], name  # no approver asked
        rejected = answers[0][2]
        assert rejected["reason_code"] == code, name
        assert rejected["rejected_by"]["user_id"] == "system:elevate-approval", name
    read_only = cases["read-only request with the admin ARN for 365 days"][0]
    [(_, _, rejected)] = reader.of(read_only.request_id)
    assert "is not the ARN of ReadOnlyAccess" in rejected["comment"]
    assert "duration exceeds the maximum of 8h" in rejected["comment"]
    # One alert per refusal, by reason.
    for code in set(before):
        count = sum(1 for _, c in cases.values() if c == code)
        assert refused(code) == before[code] + count, code


async def test_a_decision_on_a_request_that_now_fails_the_recheck_rejects_it(
    approval: InProcess, requests: Requests, policy_file: Path
) -> None:
    req = requests.submitted("DatabaseAdmin")  # 1 h; the rule allows 2 h
    await approval.feed(req, subject=req.request_id)
    assert (await approval.row(req.request_id)).status == "pending"
    # The policy tightens while it waits: a stricter rule now covers it too.
    write_policy(
        policy_file,
        extra_eligibility=(
            "  - {name: db-strict, principals: {groups: [sre]}, accounts: [{ou: Workloads/Prod}],"
            " permission_sets: [DatabaseAdmin], max_duration: 30m, approval: two-sre-leads}"
        ),
    )
    assert approval.deps.policy.poll() == "reloaded"
    before = refused("duration_too_long")
    await approval.feed(requests.decision(req, "bob"), subject=req.request_id)
    emitted = await approval.emitted(req.request_id)
    assert [n for n, _ in emitted] == ["ApprovalRequested", "DecisionRefused", "RequestRejected"]
    assert emitted[1][1]["reason"] == "request_final"
    assert "fails the re-check" in emitted[1][1]["detail"]
    assert emitted[2][1]["reason_code"] == "duration_too_long"
    assert (await approval.row(req.request_id)).status == "rejected"
    log = await approval.log(req.request_id)
    assert [(e.outcome, e.reason) for e in log][-1] == ("rejected", "duration_too_long")
    assert refused("duration_too_long") == before + 1
