"""grant-worker 4/4: when access ends, the sessions already issued with it are cut — a Deny
in the permission set's inline policy, provisioned to that one account — unless someone
still holds that role. Real PostgreSQL, Kafka and moto behind the fault proxy, which
records the parameters of every call and emulates the provisioning calls moto lacks.

moto evaluates no IAM condition, so no test here can show a session denied: the inline
policy is compared with hand-written expected statements instead."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from elevate_core.events.models import Person, RequestApproved, RevokeRequested
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.models import PermissionSetPolicy, SessionCut
from elevate_grant_worker.sessions import cut_key
from elevate_local.aws_proxy import AwsFaultProxy, Fault, FaultRule
from elevate_local.moto_seed import SeededOrganisation
from prometheus_client import REGISTRY
from sqlalchemy import select

from tests.helpers import eventually
from tests.integration.grant_worker.conftest import (
    T0,
    Factory,
    Publisher,
    Running,
    approval,
    running,
)

HOUR = timedelta(hours=1)
DAVE = Person(user_name="dave", user_id="u-dave")
FOREIGN = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "OperatorsOwn", "Effect": "Deny", "Action": "iam:*", "Resource": "*"},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::logs/*"},
    ],
}
POLICY_CALLS = (
    "GetInlinePolicyForPermissionSet",
    "PutInlinePolicyToPermissionSet",
    "DeleteInlinePolicyFromPermissionSet",
    "ProvisionPermissionSet",
)


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class World:
    """A permission set of this test's own (moto is shared) and a real Identity Store user."""

    def __init__(self, seeded: SeededOrganisation, moto: str, proxy: AwsFaultProxy) -> None:
        self.seeded = seeded
        self.sso = _client("sso-admin", moto)
        self.via_proxy = _client("sso-admin", proxy.endpoint_url)  # an operator's change
        self.store = _client("identitystore", moto)
        self.name = f"Cut{uuid.uuid4().hex[:10]}"
        self.arn = self.sso.create_permission_set(
            InstanceArn=seeded.instance_arn, Name=self.name, SessionDuration="PT2H"
        )["PermissionSet"]["PermissionSetArn"]
        self.user_id = self.store.create_user(
            IdentityStoreId=seeded.identity_store_id,
            UserName=f"cut-{uuid.uuid4().hex[:8]}",
            DisplayName="Cut Test",
            Name={"GivenName": "Cut", "FamilyName": "Test"},
        )["UserId"]
        self.account = seeded.account_ids["payments-staging"]

    @property
    def triple(self) -> Triple:
        return Triple(self.account, self.arn, self.user_id)

    def approval(self, *, start: datetime, end: datetime) -> RequestApproved:
        approved = approval(self.triple, start=start, end=end)
        snapshot = approved.snapshot.model_copy(update={"permission_set_name": self.name})
        return RequestApproved(snapshot=snapshot)

    def inline_policy(self) -> str:
        return str(
            self.sso.get_inline_policy_for_permission_set(
                InstanceArn=self.seeded.instance_arn, PermissionSetArn=self.arn
            ).get("InlinePolicy")
            or ""
        )

    def put_policy(self, document: dict[str, Any], *, through_proxy: bool = False) -> None:
        client = self.via_proxy if through_proxy else self.sso
        client.put_inline_policy_to_permission_set(
            InstanceArn=self.seeded.instance_arn,
            PermissionSetArn=self.arn,
            InlinePolicy=json.dumps(document),
        )

    def expected(self, cut_at: str, expiry: str) -> dict[str, Any]:
        """The statement, written out by hand for this user, account, cut time and expiry."""
        return {
            "Sid": f"ElevateCut{expiry}{cut_key(self.user_id, self.account)}",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "identitystore:userId": self.user_id,
                    "aws:PrincipalAccount": self.account,
                },
                "DateLessThan": {"aws:TokenIssueTime": cut_at},
            },
        }


@pytest.fixture
def world(seeded: SeededOrganisation, moto_endpoint: str, proxy: AwsFaultProxy) -> World:
    return World(seeded, moto_endpoint, proxy)


def _ours(proxy: AwsFaultProxy, world: World, operation: str) -> list[dict[str, Any]]:
    return [
        c.params
        for c in proxy.calls_of(operation)
        if c.params.get("PermissionSetArn") == world.arn and c.outcome == "ok"
    ]


async def _cuts(w: Running, world: World) -> list[str]:
    async with w.db.sessions() as s:
        rows = await s.execute(
            select(SessionCut.state)
            .where(SessionCut.permission_set_arn == world.arn)
            .order_by(SessionCut.id)
        )
        return [str(r) for r in rows.scalars()]


async def _cut_settled(w: Running, world: World, state: str) -> None:
    async def check() -> bool:
        return (await _cuts(w, world))[-1:] == [state]

    await eventually(check, what=f"the session cut {state}")


async def _revoke_active(w: Running, publish: Publisher, approved: RequestApproved) -> None:
    rid = approved.snapshot.request_id
    await w.wait_state(rid, "active")
    await publish(RevokeRequested(request_id=rid, requested_by=DAVE))
    await w.wait_state(rid, "ended")


async def _ended(w: Running, approved: RequestApproved) -> dict[str, Any]:
    ended = [d for t, d in await w.outbox_data("grant.ended") if d["grant_id"]]
    rid = str(approved.snapshot.request_id)
    return next(d for d in ended if d["snapshot"]["request_id"] == rid)


async def test_revoke_cuts_the_users_sessions_in_that_account_only(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    world.put_policy(FOREIGN)  # the operator's own statements, before Elevate is involved
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(make_settings(), cut_sessions={world.name}) as w:
        await publish(approved)
        w.advance(timedelta(minutes=10, seconds=30, microseconds=500))
        await _revoke_active(w, publish, approved)
        await _cut_settled(w, world, "applied")
        ended = await _ended(w, approved)
        assert (ended["sessions_cut"], ended["sessions_valid_until"]) == (True, None)

    document = json.loads(world.inline_policy())
    assert document["Statement"][:2] == FOREIGN["Statement"]  # equal, in order
    # Cut at 09:10:30 (rounded down); PT2H later, rounded up: 11:10:31.
    assert document["Statement"][2:] == [world.expected("2026-03-02T09:10:30Z", "20260302111031")]
    provisioned = _ours(proxy, world, "ProvisionPermissionSet")
    assert [(p["TargetType"], p["TargetId"]) for p in provisioned] == [
        ("AWS_ACCOUNT", world.account)
    ]
    assert proxy.count("DescribePermissionSetProvisioningStatus", "ok") >= 1


async def test_not_opted_in_is_never_touched(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    world.put_policy(FOREIGN)
    before = world.inline_policy()
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(
        make_settings(),
        cut_sessions={"SomeOtherPermissionSet"},
        session_durations={world.name: "PT2H"},
    ) as w:
        await publish(approved)
        w.advance(timedelta(minutes=5))
        await _revoke_active(w, publish, approved)
        ended = await _ended(w, approved)
        assert ended["sessions_cut"] is False
        # Sessions issued before the end keep working for the session duration (PT2H).
        assert ended["ended_at"] == "2026-03-02T09:05:00Z"
        assert ended["sessions_valid_until"] == "2026-03-02T11:05:00Z"
        assert await _cuts(w, world) == []
    assert world.inline_policy() == before
    assert not any(_ours(proxy, world, op) for op in POLICY_CALLS)


async def test_an_overlapping_grant_keeps_the_sessions_until_the_last_ends(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    short = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    long = world.approval(start=T0 - timedelta(minutes=1), end=T0 + 2 * HOUR)
    async with running(make_settings(), cut_sessions={world.name}) as w:
        await publish(short, long)
        await w.wait_state(long.snapshot.request_id, "active")
        await _revoke_active(w, publish, short)
        assert (await _ended(w, short))["sessions_cut"] is False  # the long one holds it
        assert await _cuts(w, world) == []
        assert not _ours(proxy, world, "PutInlinePolicyToPermissionSet")
        await _revoke_active(w, publish, long)
        await _cut_settled(w, world, "applied")
    assert len(json.loads(world.inline_policy())["Statement"]) == 1


async def test_a_standing_entry_keeps_the_role_and_its_sessions(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(
        make_settings(), standing=lambda: [world.triple], cut_sessions={world.name}
    ) as w:
        await publish(approved)
        await _revoke_active(w, publish, approved)
        ended = await _ended(w, approved)
        # The policy's standing list still grants the role: nothing is removed or cut.
        assert (ended["assignment_removed"], ended["sessions_cut"]) == (False, False)
        assert ended["sessions_valid_until"] is None
        w.advance(timedelta(minutes=1))
        await w.passed_a_scan(publish, world.seeded)
        assert await _cuts(w, world) == []
    assert not any(_ours(proxy, world, op) for op in POLICY_CALLS[1:])
    assert world.inline_policy() == ""


async def test_a_group_assignment_of_the_user_holds_the_role(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    group = world.store.create_group(
        IdentityStoreId=world.seeded.identity_store_id, DisplayName=f"g-{uuid.uuid4().hex[:8]}"
    )["GroupId"]
    world.store.create_group_membership(
        IdentityStoreId=world.seeded.identity_store_id,
        GroupId=group,
        MemberId={"UserId": world.user_id},
    )
    world.sso.create_account_assignment(
        InstanceArn=world.seeded.instance_arn,
        TargetId=world.account,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=world.arn,
        PrincipalType="GROUP",
        PrincipalId=group,
    )
    world.put_policy(FOREIGN, through_proxy=True)  # unprovisioned, and not Elevate's
    puts = len(_ours(proxy, world, "PutInlinePolicyToPermissionSet"))  # that one
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(make_settings(), cut_sessions={world.name}) as w:
        await publish(approved)
        await _revoke_active(w, publish, approved)
        await _cut_settled(w, world, "held")
        async with w.db.sessions() as s:  # nothing written: the policy is not claimed
            assert await s.get(PermissionSetPolicy, world.arn) is None
    assert json.loads(world.inline_policy()) == FOREIGN
    assert len(_ours(proxy, world, "PutInlinePolicyToPermissionSet")) == puts
    assert not _ours(proxy, world, "ProvisionPermissionSet")


async def test_foreign_unprovisioned_changes_refuse_the_cut_with_an_alert(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(make_settings(), cut_sessions={world.name}) as w:
        await publish(approved)
        await w.wait_state(approved.snapshot.request_id, "active")
        world.put_policy(FOREIGN, through_proxy=True)  # an operator's change, not provisioned
        await _revoke_active(w, publish, approved)
        await _cut_settled(w, world, "refused")
        refused = [d for _t, d in await w.outbox_data("session.cut.refused")]
    assert [(d["reason"], d["principal_id"], d["account_id"]) for d in refused] == [
        ("foreign_changes_pending", world.user_id, world.account)
    ]
    assert json.loads(world.inline_policy()) == FOREIGN  # untouched
    assert not _ours(proxy, world, "ProvisionPermissionSet")


async def test_throttling_and_conflicts_are_retried(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    faults: list[tuple[Fault, str]] = [
        ("throttle", "PutInlinePolicyToPermissionSet"),
        ("conflict", "ProvisionPermissionSet"),
        ("throttle", "DescribePermissionSetProvisioningStatus"),
    ]
    for fault, operation in faults:
        proxy.add_rule(FaultRule(fault=fault, operations=frozenset({operation}), limit=2))
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    async with running(make_settings(), cut_sessions={world.name}) as w:
        await publish(approved)
        await _revoke_active(w, publish, approved)
        await _cut_settled(w, world, "applied")
    assert proxy.count("PutInlinePolicyToPermissionSet", "throttle") == 2
    assert proxy.count("ProvisionPermissionSet", "conflict") == 2
    assert len(json.loads(world.inline_policy())["Statement"]) == 1


def _denied_passes() -> float:
    labels = {"reason": "AccessDeniedException"}
    return REGISTRY.get_sample_value("elevate_grant_session_cut_failures_total", labels) or 0.0


async def test_aws_refusing_the_write_alerts_and_the_cut_waits_pending(
    make_settings: Factory,
    publish: Publisher,
    proxy: AwsFaultProxy,
    world: World,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy.add_rule(
        FaultRule(fault="denied", operations=frozenset({"PutInlinePolicyToPermissionSet"}))
    )
    before = _denied_passes()
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    # A long backoff: the refused permission set must not be tried again in this run.
    settings = make_settings(retry_base_seconds=3600, retry_max_seconds=3600)
    async with running(settings, cut_sessions={world.name}) as w:
        await publish(approved)
        await _revoke_active(w, publish, approved)

        async def refused() -> bool:
            return proxy.count("PutInlinePolicyToPermissionSet", "denied") >= 1

        await eventually(refused, what="the inline-policy write refused by AWS")
        for _ in range(2):  # scans go on; the refused permission set waits out its backoff
            await w.passed_a_scan(publish, world.seeded)
        assert proxy.count("PutInlinePolicyToPermissionSet", "denied") == 1
        assert await _cuts(w, world) == ["pending"]
        assert _denied_passes() == before + 1
        # The service logs to stdout (its own handler, so not caplog): the operator's alert.
        alert = f" ERROR   elevate_grant_worker.cuts: SECURITY: session cut on {world.arn} "
        assert alert + "refused by AWS (AccessDeniedException)" in capsys.readouterr().out
        assert not _ours(proxy, world, "ProvisionPermissionSet")
    proxy.clear_rules()  # the operator grants the permission; a restart tries again
    async with running(settings, cut_sessions={world.name}) as w:
        await _cut_settled(w, world, "applied")
    assert len(json.loads(world.inline_policy())["Statement"]) == 1


async def test_the_statement_goes_once_its_expiry_passes_also_after_a_restart(
    make_settings: Factory, publish: Publisher, proxy: AwsFaultProxy, world: World
) -> None:
    world.put_policy(FOREIGN)
    approved = world.approval(start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    settings = make_settings()
    async with running(settings, cut_sessions={world.name}) as w:
        await publish(approved)
        await _revoke_active(w, publish, approved)
        await _cut_settled(w, world, "applied")
        clock = w.clock
    assert len(json.loads(world.inline_policy())["Statement"]) == 3
    clock.advance(2 * HOUR + timedelta(seconds=2))  # past the session duration (PT2H)
    async with running(settings, clock=clock, cut_sessions={world.name}) as w:

        async def removed() -> bool:
            return bool(json.loads(world.inline_policy()) == FOREIGN)

        await eventually(removed, what="the expired Elevate statement removed")
