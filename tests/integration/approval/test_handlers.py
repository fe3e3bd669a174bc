"""approval's handlers in one transaction each, on PostgreSQL with the real directory
over moto and a real policy file: what they store, log and emit."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from elevate_approval.models import AppendOnlyError, DecisionLogEntry
from elevate_approval.service import EXPIRE
from elevate_approval.timers import timer_handlers
from elevate_core.events.models import Person
from elevate_core.policy import load_policy
from elevate_core.timers import Timer, TimerRunner
from elevate_local.moto_seed import SeededOrganisation
from prometheus_client import REGISTRY
from sqlalchemy import select

from tests.integration.approval.conftest import InProcess, Requests, write_policy

pytestmark = pytest.mark.integration


async def test_two_of_three_with_a_self_approval_and_a_repeat(
    approval: InProcess, requests: Requests
) -> None:
    req = requests.submitted("DatabaseAdmin")
    rid = req.request_id
    await approval.feed(req, subject=rid)
    row = await approval.row(rid)
    assert (row.status, row.approval_rule, row.required_approvals) == (
        "pending",
        "two-sre-leads",
        2,
    )
    assert row.deadline == approval.clock.now() + timedelta(hours=8)
    assert row.submitted_policy_version == "as-submitted"
    assert row.policy_version == approval.deps.policy.policy.version

    approval.clock.advance(timedelta(minutes=3))
    await approval.feed(requests.decision(req, "alice"), subject=rid)  # her own request
    await approval.feed(requests.decision(req, "bob"), subject=rid)
    await approval.feed(requests.decision(req, "bob"), subject=rid)  # again, new event
    await approval.feed(requests.decision(req, "frank"), subject=rid)
    await approval.feed(requests.decision(req, "grace", approve=False), subject=rid)

    emitted = await approval.emitted(rid)
    assert [name for name, _ in emitted] == [
        "ApprovalRequested",
        "DecisionRefused",
        "DecisionRecorded",
        "DecisionRefused",
        "DecisionRecorded",
        "RequestApproved",
        "DecisionRefused",
    ]
    assert [d["reason"] for n, d in emitted if n == "DecisionRefused"] == [
        "requester",
        "already_decided",
        "request_final",
    ]
    snapshot = emitted[5][1]["snapshot"]
    seeded = requests.seeded
    assert snapshot["requester"] == {
        "user_name": "alice",
        "user_id": seeded.user_ids["alice"],
        "email": "alice@elevate.example",
    }
    assert snapshot["account_id"] == seeded.account_ids["payments-prod"]
    assert snapshot["permission_set_name"] == "DatabaseAdmin"
    assert snapshot["permission_set_arn"] == seeded.permission_set_arns["DatabaseAdmin"]
    assert snapshot["approvers"] == ["bob", "frank"]
    assert snapshot["approval_rule"] == "two-sre-leads"
    assert snapshot["justification"] == "OPS-7 failover drill"
    assert snapshot["ticket"] == "OPS-7"
    assert snapshot["policy_version"] == "as-submitted"
    assert snapshot["approval_policy_version"] == approval.deps.policy.policy.version

    row = await approval.row(rid)
    assert (row.status, row.approvers, row.expiry_timer_key) == ("approved", ["bob", "frank"], None)
    async with approval.db.sessions() as s:
        timers = (await s.execute(select(Timer).where(Timer.kind == EXPIRE))).scalars().all()
    assert timers == []  # decided: the expiry timer is gone

    log = await approval.log(rid)
    assert [(e.actor_user_name, e.action, e.outcome, e.reason) for e in log] == [
        ("alice", "submit", "pending", None),
        ("alice", "approve", "refused", "requester"),
        ("bob", "approve", "counted", None),
        ("bob", "approve", "refused", "already_decided"),
        ("frank", "approve", "counted", None),
        ("frank", "approve", "approved", None),
        ("grace", "reject", "refused", "request_final"),
    ]
    bob = log[2]
    assert bob.comment == "bob says yes"
    assert bob.actor_user_id == seeded.user_ids["bob"]
    assert bob.actor_groups == ["sre-leads"]
    assert bob.policy_version == approval.deps.policy.policy.version
    assert bob.at == approval.clock.now()
    assert bob.event_id is not None


async def test_the_decision_log_is_append_only(approval: InProcess, requests: Requests) -> None:
    req = requests.submitted("AdministratorAccess")
    await approval.feed(req, subject=req.request_id)

    async def rewrite() -> None:
        async with approval.db.transaction() as session:
            entry = (await session.execute(select(DecisionLogEntry))).scalars().one()
            entry.comment = "rewritten history"

    async def erase() -> None:
        async with approval.db.transaction() as session:
            entry = (await session.execute(select(DecisionLogEntry))).scalars().one()
            await session.delete(entry)

    with pytest.raises(AppendOnlyError):
        await rewrite()
    with pytest.raises(AppendOnlyError):
        await erase()
    assert len(await approval.log(req.request_id)) == 1


async def test_auto_approval_and_break_glass(approval: InProcess, requests: Requests) -> None:
    before = REGISTRY.get_sample_value(
        "elevate_approval_outcomes_total", {"rule": "break-glass", "outcome": "break_glass"}
    )
    auto = requests.submitted("ReadOnlyAccess", requester="erin", account="sandbox-shared")
    await approval.feed(auto, subject=auto.request_id)
    [(name, data)] = await approval.emitted(auto.request_id)
    assert name == "RequestApproved"
    assert data["auto_approved"] is True
    assert data["snapshot"]["approval_rule"] == "auto"
    assert (await approval.row(auto.request_id)).status == "approved"

    glass = requests.submitted("AdministratorAccess", account="data-prod", break_glass=True)
    await approval.feed(glass, subject=glass.request_id)
    emitted = await approval.emitted(glass.request_id)
    assert [n for n, _ in emitted] == ["RequestApproved", "BreakGlassUsed"]
    assert emitted[0][1]["snapshot"]["break_glass"] is True
    alarm = emitted[1][1]
    assert alarm["severity"] == "high"
    assert alarm["review"] == "pending"
    assert alarm["review_groups"] == ["sre-leads", "auditors"]
    assert alarm["matched_rule"] == "sre-break-glass"
    row = await approval.row(glass.request_id)
    assert (row.status, row.review, row.approval_rule) == ("approved", "pending", "break-glass")
    after = REGISTRY.get_sample_value(
        "elevate_approval_outcomes_total", {"rule": "break-glass", "outcome": "break_glass"}
    )
    assert (after or 0) - (before or 0) == 1

    # Break-glass where no break-glass rule covers it (Security OU is excluded).
    outside = requests.submitted("AdministratorAccess", account="log-archive", break_glass=True)
    await approval.feed(outside, subject=outside.request_id)
    [(name, data)] = await approval.emitted(outside.request_id)
    assert name == "RequestRejected"
    assert data["rejected_by"]["user_id"] == "system:elevate-approval"


async def test_approver_removed_from_the_group_between_submit_and_decision(
    approval: InProcess,
    requests: Requests,
    seeded: SeededOrganisation,
    moto_endpoint: str,
    policy_file: Path,
) -> None:
    ids = boto3.client("identitystore", endpoint_url=moto_endpoint, region_name="us-east-1")
    store = seeded.identity_store_id
    tag = uuid.uuid4().hex[:8]
    name, group = f"approver-{tag}", f"leads-{tag}"
    user_id = ids.create_user(
        IdentityStoreId=store,
        UserName=name,
        DisplayName="Temp Approver",
        Name={"GivenName": "Temp", "FamilyName": "Approver"},
    )["UserId"]
    group_id = ids.create_group(IdentityStoreId=store, DisplayName=group)["GroupId"]
    membership = ids.create_group_membership(
        IdentityStoreId=store, GroupId=group_id, MemberId={"UserId": user_id}
    )["MembershipId"]
    write_policy(
        policy_file,
        extra_rules=f"  - {{name: {group}, approver_groups: [{group}]}}",
        extra_eligibility=(
            "  - {name: sre-prod-power, principals: {groups: [sre]},"
            " accounts: [{ou: Workloads/Prod}], permission_sets: [PowerUserAccess],"
            f" max_duration: 2h, approval: {group}}}"
        ),
    )
    assert approval.deps.policy.poll() == "reloaded"

    req = requests.submitted("PowerUserAccess")
    await approval.feed(req, subject=req.request_id)
    me = Person(user_name=name, user_id=user_id)
    # A lookup while still a member primes the directory's cache.
    assert group in (await approval.deps.directory.get_user(name)).groups

    ids.delete_group_membership(IdentityStoreId=store, MembershipId=membership)
    await approval.feed(requests.decision(req, me), subject=req.request_id)
    ids.create_group_membership(
        IdentityStoreId=store, GroupId=group_id, MemberId={"UserId": user_id}
    )
    await approval.feed(requests.decision(req, me), subject=req.request_id)

    emitted = await approval.emitted(req.request_id)
    assert [n for n, _ in emitted] == [
        "ApprovalRequested",
        "DecisionRefused",
        "DecisionRecorded",
        "RequestApproved",
    ]
    assert emitted[0][1]["approver_groups"] == [group]
    assert emitted[1][1]["reason"] == "not_an_approver"
    assert emitted[3][1]["snapshot"]["approvers"] == [name]


async def test_a_decision_naming_an_approver_with_another_ones_id_does_not_count(
    approval: InProcess, requests: Requests, seeded: SeededOrganisation
) -> None:
    """The decider is read by the id the event names; frank's id under bob's name is
    neither bob nor frank (the directory believes the id only with its own name)."""
    req = requests.submitted("DatabaseAdmin")
    rid = req.request_id
    await approval.feed(req, subject=rid)
    mixed = Person(user_name="bob", user_id=seeded.user_ids["frank"])
    await approval.feed(requests.decision(req, mixed), subject=rid)
    await approval.feed(requests.decision(req, "frank"), subject=rid)
    emitted = await approval.emitted(rid)
    assert [n for n, _ in emitted] == ["ApprovalRequested", "DecisionRefused", "DecisionRecorded"]
    assert emitted[1][1]["reason"] == "not_an_approver"
    assert "does not match the directory" in emitted[1][1]["detail"]
    assert (await approval.row(rid)).status == "pending"  # one of two: frank's alone


async def test_current_policy_decides_not_the_submitted_one(
    approval: InProcess, requests: Requests, policy_file: Path
) -> None:
    req = requests.submitted("DatabaseAdmin")
    await approval.feed(req, subject=req.request_id)
    old = approval.deps.policy.policy.version
    write_policy(policy_file, two_required=1)  # two-sre-leads now needs one lead
    assert approval.deps.policy.poll() == "reloaded"
    await approval.feed(requests.decision(req, "grace"), subject=req.request_id)
    emitted = await approval.emitted(req.request_id)
    assert [n for n, _ in emitted] == ["ApprovalRequested", "DecisionRecorded", "RequestApproved"]
    assert emitted[1][1]["required_approvals"] == 1
    snapshot = emitted[2][1]["snapshot"]
    assert snapshot["approval_policy_version"] == approval.deps.policy.policy.version != old
    log = await approval.log(req.request_id)
    assert [e.policy_version for e in log] == [old, *[approval.deps.policy.policy.version] * 2]


async def test_expiry_timer_fires_once_by_the_injected_clock(
    approval: InProcess, requests: Requests
) -> None:
    runner = TimerRunner(approval.db, timer_handlers(approval.deps), clock=approval.clock)
    pending = requests.submitted("AdministratorAccess")
    decided = requests.submitted("AdministratorAccess")
    for req in (pending, decided):
        await approval.feed(req, subject=req.request_id)
    await approval.feed(requests.decision(decided, "bob"), subject=decided.request_id)

    approval.clock.advance(timedelta(hours=4))
    assert await runner.fire_due() == 0  # the deadline, but a decision may be in flight
    approval.clock.advance(approval.deps.expiry_grace)
    assert await runner.fire_due() == 1
    approval.clock.advance(timedelta(days=2))
    assert await runner.fire_due() == 0

    expired = [n for n, _ in await approval.emitted(pending.request_id)]
    assert expired == ["ApprovalRequested", "RequestExpired"]
    assert "RequestExpired" not in [n for n, _ in await approval.emitted(decided.request_id)]
    assert (await approval.row(pending.request_id)).status == "expired"
    await approval.feed(requests.decision(pending, "bob"), subject=pending.request_id)
    last = (await approval.emitted(pending.request_id))[-1]
    assert (last[0], last[1]["reason"]) == ("DecisionRefused", "request_final")


async def test_a_lengthened_timeout_re_arms_the_timer(
    approval: InProcess, requests: Requests, policy_file: Path
) -> None:
    runner = TimerRunner(approval.db, timer_handlers(approval.deps), clock=approval.clock)
    req = requests.submitted("AdministratorAccess")
    await approval.feed(req, subject=req.request_id)
    write_policy(policy_file, one="6h")
    assert approval.deps.policy.poll() == "reloaded"
    approval.clock.advance(timedelta(hours=4) + approval.deps.expiry_grace)
    assert await runner.fire_due() == 1  # fired, found a later deadline, re-armed
    assert (await approval.row(req.request_id)).status == "pending"
    approval.clock.advance(timedelta(hours=2))
    assert await runner.fire_due() == 1
    assert (await approval.row(req.request_id)).status == "expired"
    names = [n for n, _ in await approval.emitted(req.request_id)]
    assert names == ["ApprovalRequested", "RequestExpired"]


async def test_a_replica_with_a_stale_policy_file_re_reads_it_before_deciding(
    approval: InProcess, requests: Requests, policy_file: Path
) -> None:
    before = approval.deps.policy.policy.version
    write_policy(policy_file, two_required=1)  # on disk, not yet polled by this replica
    current = load_policy(policy_file).version
    assert approval.deps.policy.policy.version == before != current
    req = requests.submitted("DatabaseAdmin").model_copy(update={"policy_version": current})
    await approval.feed(req, subject=req.request_id)
    await approval.feed(
        requests.decision(req, "grace").model_copy(update={"policy_version": current}),
        subject=req.request_id,
    )
    emitted = await approval.emitted(req.request_id)
    # Decided under the file request-api checked it under: one lead is now enough.
    assert [n for n, _ in emitted] == ["ApprovalRequested", "DecisionRecorded", "RequestApproved"]
    assert all(
        data["decided_under"]
        == {"policy_version": current, "cause_policy_version": current, "differed": False}
        for _, data in emitted
    )


async def test_an_old_request_is_decided_under_the_current_policy_with_the_difference_recorded(
    approval: InProcess, requests: Requests
) -> None:
    current = approval.deps.policy.policy.version
    differed = REGISTRY.get_sample_value("elevate_approval_policy_version_differed_total") or 0
    req = requests.submitted("AdministratorAccess")  # checked under "as-submitted", gone now
    await approval.feed(req, subject=req.request_id)
    await approval.feed(requests.decision(req, "bob"), subject=req.request_id)
    emitted = await approval.emitted(req.request_id)
    assert [n for n, _ in emitted] == ["ApprovalRequested", "DecisionRecorded", "RequestApproved"]
    # The decision event named no version: only the submission's step differed.
    assert emitted[0][1]["decided_under"] == {
        "policy_version": current,
        "cause_policy_version": "as-submitted",
        "differed": True,
    }
    assert emitted[2][1]["decided_under"]["policy_version"] == current
    assert emitted[2][1]["snapshot"]["approval_policy_version"] == current
    [submitted, *_] = await approval.log(req.request_id)
    assert submitted.policy_version == current
    assert "as-submitted" in (submitted.detail or "")
    after = REGISTRY.get_sample_value("elevate_approval_policy_version_differed_total")
    assert after == differed + 1
