"""grant-worker re-checks every approval against its own policy copy and directory before
any AWS write: a well-formed approval the policy does not allow (as anyone could publish
on a misconfigured cluster) ends as `GrantFailed` with the reason code, the alert metric
counts it, and Identity Center never hears of it — not even when a genuine grant already
holds the very assignment it names. A directory that cannot answer only delays."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from elevate_core.events.models import Person, RequestApproved, RevokeRequested
from elevate_local.aws_proxy import AwsFaultProxy, FaultRule
from elevate_local.moto_seed import SeededOrganisation
from prometheus_client import REGISTRY

from tests.integration.grant_worker.conftest import (
    Factory,
    Publisher,
    Running,
    assignment_exists,
)
from tests.integration.grant_worker.rechecked import (
    ACCOUNT,
    PERMISSION_SET,
    access_for,
    approval_for,
    new_member,
    running_rechecked,
    triple_of,
    write_policy,
)

pytestmark = pytest.mark.integration

YEAR = timedelta(days=365)


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "elevate_recheck_refused_total", {"service": "grant-worker", "reason": reason}
    )
    return value or 0.0


def assignment_calls(proxy: AwsFaultProxy, principals: set[str]) -> list[str]:
    """Identity Center calls that named any of `principals` (none may)."""
    return [c.operation for c in proxy.calls if c.params.get("PrincipalId") in principals]


async def failed_with(w: Running, request_id: uuid.UUID) -> dict[str, Any]:
    """The grant failed, with no other event of its own: its GrantFailed's data."""
    await w.wait_state(request_id, "failed")
    assert await w.events(request_id) == ["failed"]
    rid = str(request_id)
    [data] = [
        d for _, d in await w.outbox_data("grant.failed") if d["snapshot"]["request_id"] == rid
    ]
    assert isinstance(data, dict)
    return data


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


async def test_approvals_that_fail_the_recheck_fail_without_an_aws_call(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    moto_endpoint: str,
    proxy: AwsFaultProxy,
    policy_file: Path,
    sso: object,
) -> None:
    member, control = new_member(moto_endpoint, seeded), new_member(moto_endpoint, seeded)
    ghost = Person(user_name=f"ghost-{uuid.uuid4().hex[:8]}", user_id=str(uuid.uuid4()))
    arns = seeded.permission_set_arns
    staging = seeded.account_ids[ACCOUNT]

    settings = make_settings()
    async with running_rechecked(settings, access_for(policy_file, proxy.endpoint_url)) as w:
        now = w.clock.now()

        def approved(person: Person = member, **changes: Any) -> RequestApproved:
            values: dict[str, Any] = {
                "account_id": staging,
                "permission_set": PERMISSION_SET,
                "permission_set_arn": arns[PERMISSION_SET],
                "start": now - timedelta(minutes=1),
                "end": now + timedelta(hours=1),
            }
            return approval_for(person, **{**values, **changes})

        forged = {
            "duration_too_long": approved(end=now + 10 * YEAR),
            "management_account": approved(account_id=seeded.management_account_id),
            "permission_set_arn_mismatch": approved(
                permission_set_arn=arns[PERMISSION_SET].rsplit("/", 1)[0] + "/ps-forged00000000"
            ),
            "user_unknown": approved(ghost),
        }
        # The case: a read-only request carrying the AdministratorAccess ARN.
        read_only = approved(
            permission_set="ReadOnlyAccess",
            permission_set_arn=arns["AdministratorAccess"],
            end=now + YEAR,
        )
        genuine = approved(control)
        before = {code: refused(code) for code in forged}
        await publish(*forged.values(), read_only, genuine)

        active = await w.wait_state(genuine.snapshot.request_id, "active")
        assert active.rechecked_at is not None
        for code, approval in forged.items():
            data = await failed_with(w, approval.snapshot.request_id)
            assert data["reason_code"] == code
            assert data["aws_error_code"] is None
        data = await failed_with(w, read_only.snapshot.request_id)
        assert data["reason_code"] == "permission_set_arn_mismatch"
        assert "duration exceeds the maximum of 4h" in data["reason"]
        # One alert per refusal, by reason (the read-only one is an ARN mismatch too).
        mismatch = "permission_set_arn_mismatch"
        assert {code: refused(code) - before[code] for code in forged} == {
            **dict.fromkeys(forged, 1.0),
            mismatch: 2.0,
        }

        # Identity Center heard of the genuine grant only.
        assert assignment_calls(proxy, {member.user_id, ghost.user_id}) == []
        creates = proxy.calls_of("CreateAccountAssignment")
        assert [c.params["PrincipalId"] for c in creates] == [control.user_id]
        assert assignment_exists(sso, seeded, triple_of(seeded, member)) == 0  # type: ignore[arg-type]

        await publish(RevokeRequested(request_id=genuine.snapshot.request_id, requested_by=control))
        await w.wait_state(genuine.snapshot.request_id, "ended")


async def test_a_forged_approval_never_rides_on_a_genuine_grants_assignment(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    moto_endpoint: str,
    proxy: AwsFaultProxy,
    policy_file: Path,
    sso: object,
) -> None:
    """The assignment already exists for a genuine grant: a forged approval for the same
    triple needs no AWS call to be 'served', so only the re-check stands in its way."""
    member = new_member(moto_endpoint, seeded)
    t = triple_of(seeded, member)
    arns = seeded.permission_set_arns
    async with running_rechecked(make_settings(), access_for(policy_file, proxy.endpoint_url)) as w:
        now = w.clock.now()
        window: dict[str, Any] = {
            "account_id": t.account_id,
            "permission_set": PERMISSION_SET,
            "permission_set_arn": arns[PERMISSION_SET],
        }
        genuine = approval_for(
            member, **window, start=now - timedelta(minutes=1), end=now + timedelta(hours=1)
        )
        await publish(genuine)
        await w.wait_state(genuine.snapshot.request_id, "active")

        ten_years = approval_for(member, **window, start=now, end=now + 10 * YEAR)
        await publish(ten_years)
        data = await failed_with(w, ten_years.snapshot.request_id)
        assert data["reason_code"] == "duration_too_long"

        # Revoking the genuine grant removes the access: nothing else holds it.
        await publish(RevokeRequested(request_id=genuine.snapshot.request_id, requested_by=member))
        ended = await w.wait_state(genuine.snapshot.request_id, "ended")
        assert ended.assignment_removed is True
        assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
        assert proxy.count("CreateAccountAssignment") == 1


async def test_a_directory_that_cannot_answer_delays_the_grant_never_fails_it(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    moto_endpoint: str,
    proxy: AwsFaultProxy,
    policy_file: Path,
) -> None:
    member = new_member(moto_endpoint, seeded)
    t = triple_of(seeded, member)
    # The Identity Store fails the first lookups (every botocore attempt of the first re-check):
    # the user is read by the id the request names (DescribeUser), by name where that misses.
    reads = frozenset({"GetUserId", "DescribeUser"})
    outage = proxy.add_rule(FaultRule("http500", reads, limit=3))
    async with running_rechecked(make_settings(), access_for(policy_file, proxy.endpoint_url)) as w:
        now = w.clock.now()
        approved = approval_for(
            member,
            account_id=t.account_id,
            permission_set=PERMISSION_SET,
            permission_set_arn=t.permission_set_arn,
            start=now - timedelta(minutes=1),
            end=now + timedelta(hours=1),
        )
        await publish(approved)
        await w.wait_state(approved.snapshot.request_id, "active")
        assert outage.fired == 3
        assert await w.events(approved.snapshot.request_id) == ["activated"]
        await publish(RevokeRequested(request_id=approved.snapshot.request_id, requested_by=member))
        await w.wait_state(approved.snapshot.request_id, "ended")
