"""grant-worker 3/4: revocations first under the AWS budget, a reconciler sweep that finds
(and, when asked, removes) drift, and standing access that follows its sources — real
PostgreSQL, Kafka and moto behind the fault proxy."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from elevate_core.directory.aws import Directory
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.models import Grant
from elevate_grant_worker.standing import PolicyStanding
from elevate_local.aws_proxy import AwsFaultProxy, FaultRule
from elevate_local.moto_seed import SeededOrganisation
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from tests.helpers import eventually
from tests.integration.grant_worker.conftest import (
    T0,
    Factory,
    Publisher,
    Running,
    approval,
    assignment_exists,
    new_triple,
    out_of_band,
    running,
)

HOUR = timedelta(hours=1)


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _waits() -> float:
    total = 0.0
    for family in REGISTRY.collect():
        if family.name == "elevate_grant_aws_waits":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def test_fifty_grants_expiring_together_under_throttling_never_fail_to_revoke(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    for fault in ("throttle", "conflict"):
        proxy.add_rule(FaultRule(fault=fault, rate=0.15))  # 30 % of calls answered "not now"
    proxy.add_rule(FaultRule(fault="in_progress", polls=2))
    # Default attempts and alerts. The product's own AWS timeout (5 s), not the tests' 2 s:
    # a write whose answer a loaded machine delivers after the client gave up is ambiguous,
    # nobody polls its status, and the proxy would count it in flight for good.
    settings = make_settings(
        aws_calls_per_second=40, aws_timeout_seconds=5.0, leader_lease_seconds=15.0
    )
    accounts = ["payments-staging", "sandbox-shared", "data-prod"]
    triples = [new_triple(seeded, account=accounts[n % 3]) for n in range(50)]
    grants = [approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR) for t in triples]
    failed_before = _metric("elevate_grant_revocation_failed_total")
    waits_before = _waits()
    async with running(settings) as w:
        await publish(*grants)
        await eventually(lambda: _all_in(w, "active", 50), timeout=120, what="50 activations")
        w.advance(HOUR + timedelta(seconds=1))  # all fifty end in the same second
        await eventually(lambda: _all_in(w, "ended", 50), timeout=120, what="50 revocations")
        for g in grants:
            assert await w.events(g.snapshot.request_id) == ["activated", "ended"]  # no "failed"
    for t in triples:
        assert assignment_exists(sso, seeded, t) == 0, f"orphan {t}"  # type: ignore[arg-type]
    assert _metric("elevate_grant_revocation_failed_total") == failed_before
    assert _waits() > waits_before
    assert proxy.count(outcome="throttle") + proxy.count(outcome="conflict") > 30
    assert proxy.peak_calls_per_second <= 40, proxy.stats()
    assert proxy.peak_in_flight <= settings.aws_max_in_flight_writes, proxy.stats()


async def _all_in(w: Running, state: str, n: int) -> bool:
    async with w.db.sessions() as s:
        count = await s.execute(select(func.count()).select_from(Grant).where(Grant.state == state))
        return int(count.scalar_one()) == n


async def test_a_revocation_goes_through_while_slow_creates_hold_their_lane(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    settings = make_settings()  # default budget: 10 calls/s, 5 writes in flight (2 kept)
    ending = new_triple(seeded)
    first = approval(ending, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    slow = [new_triple(seeded, account="sandbox-shared") for _ in range(5)]
    holds = [
        proxy.hold("CreateAccountAssignment", match={"PrincipalId": t.principal_id}) for t in slow
    ]
    async with running(settings) as w:
        await publish(first)
        await w.wait_state(first.snapshot.request_id, "active")
        await publish(*(approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR) for t in slow))
        gate = w.worker.aws.gate
        reached = [h.reached for h in holds]
        await eventually(lambda: _true(sum(r.is_set() for r in reached) == 3), what="3 held")
        assert gate.used_by_others == 3
        w.advance(HOUR + timedelta(seconds=1))  # the first grant ends behind five slow creates
        g = await w.wait_state(first.snapshot.request_id, "ended")
        assert g.assignment_removed is True
        assert assignment_exists(sso, seeded, ending) == 0  # type: ignore[arg-type]
        assert sum(h.reached.is_set() for h in holds) == 3  # their lane's share, no more
        for h in holds:
            h.release()
    assert proxy.peak_calls_per_second <= settings.aws_calls_per_second, proxy.stats()
    assert proxy.peak_in_flight <= settings.aws_max_in_flight_writes, proxy.stats()


async def _true(value: bool) -> bool:
    return value


# ---- the reconciler sweep ----


def _pair(seeded: SeededOrganisation, account: str = "log-archive") -> Triple:
    return Triple(seeded.account_ids[account], seeded.permission_set_arns["DatabaseAdmin"], "")


def _user(pair: Triple) -> Triple:
    return Triple(pair.account_id, pair.permission_set_arn, str(uuid.uuid4()))


async def _swept(w: Running) -> Any:
    await eventually(lambda: _true(w.worker.lease.held), what="the worker leads")
    await w.worker.sweeper.idle()  # the sweep it makes when it starts leading
    return await w.worker.sweeper.sweep_once()


async def _drift(w: Running, t: Triple) -> list[str]:
    """(kind, action) of DriftDetected events published for the triple."""
    out = []
    for _type, data in await w.outbox_data("drift.detected"):
        if data["principal_id"] == t.principal_id and data["account_id"] == t.account_id:
            out.append(f"{data['kind']}:{data['action']}")
    return out


async def test_drift_is_reported_in_dry_run_and_removed_with_removal_on(
    make_settings: Factory,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    pg_url: str,
) -> None:
    pair = _pair(seeded)
    baseline, stranger, group = _user(pair), _user(pair), _user(pair)
    out_of_band(sso, seeded, baseline, proxy=proxy)  # type: ignore[arg-type]
    out_of_band(sso, seeded, group, principal_type="GROUP", proxy=proxy)  # type: ignore[arg-type]
    scope = {(pair.account_id, pair.permission_set_arn)}
    async with running(make_settings(), scope=scope) as w:
        await _swept(w)  # first sight of the pair: what is there is baseline
        assert await w.standing(baseline) == "baseline"
        assert await w.standing(group) is None  # groups are never Elevate's
        out_of_band(sso, seeded, stranger)  # type: ignore[arg-type]
        report = await w.worker.sweeper.sweep_once()
        assert report.found == 1
        await eventually(
            lambda: _has_drift(w, stranger, "unexpected_assignment:reported"),
            what="the drift reported",
        )
        await w.worker.sweeper.sweep_once()
        assert await _drift(w, stranger) == ["unexpected_assignment:reported"]  # once
        assert proxy.count("DeleteAccountAssignment") == 0  # dry run: only reported
    assert assignment_exists(sso, seeded, stranger) == 1  # type: ignore[arg-type]

    async with running(make_settings(drift_removal=True), scope=scope) as w:
        await _swept(w)
        # The event is written once AWS confirms the deletion: wait for it, then check AWS.
        await eventually(
            lambda: _has_drift(w, stranger, "unexpected_assignment:removed"),
            what="the drift removed",
        )
        assert await _gone(sso, seeded, stranger)
    assert assignment_exists(sso, seeded, baseline) == 1  # type: ignore[arg-type]
    assert _group_assigned(sso, seeded, group)
    assert proxy.count("DeleteAccountAssignment") == 1


async def _gone(sso: object, seeded: SeededOrganisation, t: Triple) -> bool:
    return assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


def _group_assigned(sso: Any, seeded: SeededOrganisation, t: Triple) -> bool:
    rows = sso.list_account_assignments(
        InstanceArn=seeded.instance_arn,
        AccountId=t.account_id,
        PermissionSetArn=t.permission_set_arn,
    )["AccountAssignments"]
    return any(r["PrincipalId"] == t.principal_id and r["PrincipalType"] == "GROUP" for r in rows)


async def test_a_needed_assignment_deleted_out_of_band_is_recreated(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    pair = _pair(seeded, "security-tooling")
    t = _user(pair)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    scope = {(pair.account_id, pair.permission_set_arn)}
    async with running(make_settings(), scope=scope) as w:
        await publish(approved)
        await w.wait_state(approved.snapshot.request_id, "active")
        out_of_band(sso, seeded, t, create=False)  # type: ignore[arg-type]
        report = await _swept(w)
        assert report.missing == 1
        await eventually(lambda: _present(sso, seeded, t), what="the assignment recreated")
        await eventually(lambda: _has_drift(w, t, "missing_assignment:restored"), what="reported")
    assert proxy.count("CreateAccountAssignment", "ok") == 2


async def _present(sso: object, seeded: SeededOrganisation, t: Triple) -> bool:
    return assignment_exists(sso, seeded, t) == 1  # type: ignore[arg-type]


async def _has_drift(w: Running, t: Triple, what: str) -> bool:
    return what in await _drift(w, t)


async def test_a_baseline_assignment_removed_then_re_added_is_drift(
    make_settings: Factory,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    pair = _pair(seeded, "sandbox-alice")
    baseline = _user(pair)
    out_of_band(sso, seeded, baseline, proxy=proxy)  # type: ignore[arg-type]
    async with running(make_settings(), scope={(pair.account_id, pair.permission_set_arn)}) as w:
        await _swept(w)
        assert await w.standing(baseline) == "baseline"
        out_of_band(sso, seeded, baseline, create=False)  # type: ignore[arg-type]
        await w.worker.sweeper.sweep_once()
        assert await w.standing(baseline) is None  # dropped: a baseline follows AWS
        assert "dropped" in await w.events(None)
        out_of_band(sso, seeded, baseline)  # type: ignore[arg-type]
        report = await w.worker.sweeper.sweep_once()
        assert report.found == 1
        await eventually(
            lambda: _has_drift(w, baseline, "unexpected_assignment:reported"),
            what="the re-added assignment reported as drift",
        )


async def test_an_assignment_found_at_activation_is_served_not_made_standing(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    pair = _pair(seeded, "data-prod")
    t = _user(pair)
    async with running(make_settings(), scope={(pair.account_id, pair.permission_set_arn)}) as w:
        await _swept(w)  # the pair is under management before the assignment appears
        out_of_band(sso, seeded, t, proxy=proxy)  # type: ignore[arg-type]
        approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
        await publish(approved)
        await w.wait_state(approved.snapshot.request_id, "active")
        assert proxy.count("CreateAccountAssignment") == 0  # found, adopted
        assert await w.standing(t) is None  # never promoted to standing
        w.advance(HOUR + timedelta(seconds=1))
        g = await w.wait_state(approved.snapshot.request_id, "ended")
        assert g.assignment_removed is True
    assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]


async def test_a_sweep_calls_aws_in_proportion_to_what_is_provisioned(
    make_settings: Factory,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
) -> None:
    """Eight accounts x two permission sets in scope; one provisioned pair with five users
    (pages of two): the sweep asks per permission set, then lists only that pair."""
    proxy.moto_gaps.page_size = 2
    ps = ["DatabaseAdmin", "ReadOnlyAccess"]
    scope = {
        (account, seeded.permission_set_arns[name])
        for account in seeded.account_ids.values()
        for name in ps
    }
    provisioned = Triple(
        seeded.account_ids["log-archive"], seeded.permission_set_arns["DatabaseAdmin"], ""
    )
    for _ in range(5):
        out_of_band(sso, seeded, _user(provisioned), proxy=proxy)  # type: ignore[arg-type]
    async with running(make_settings(), scope=scope) as w:
        await _swept(w)
        proxy.reset_stats()
        report = await w.worker.sweeper.sweep_once()
    listed = proxy.calls_of("ListAccountAssignments")
    asked = proxy.calls_of("ListAccountsForProvisionedPermissionSet")
    pairs_listed = {(c.params["AccountId"], c.params["PermissionSetArn"]) for c in listed}
    users = {(a, p): len(_users_of(sso, seeded, a, p)) for a, p in pairs_listed}
    bound = sum(1 + len(_provisioned_for(proxy, p)) // 2 for p in {p for _a, p in scope})
    bound += sum(1 + n // 2 for n in users.values())
    assert len(asked) + len(listed) == report.calls
    assert report.calls <= bound, (report, bound)
    assert report.calls < len(scope), "a sweep must not list every pair in scope"
    assert report.provisioned == len(pairs_listed)


def _users_of(sso: Any, seeded: SeededOrganisation, account: str, ps: str) -> list[Any]:
    return [
        r
        for r in sso.list_account_assignments(
            InstanceArn=seeded.instance_arn, AccountId=account, PermissionSetArn=ps
        )["AccountAssignments"]
        if r["PrincipalType"] == "USER"
    ]


def _provisioned_for(proxy: AwsFaultProxy, ps: str) -> set[str]:
    return set(proxy.moto_gaps._provisioned.get(ps, set()))


class _Policy:
    """What PolicyStanding reads of AccessControl: the policy's standing entries (as the
    policy writes them: account id, permission set name, user name) and the directory."""

    def __init__(self, entries: list[tuple[str, str, str]], directory: Directory) -> None:
        self.entries = entries
        self.directory = directory
        self.version = 1

    @property
    def policy(self) -> Any:
        return SimpleNamespace(version=str(self.version))

    async def evaluator(self) -> Any:
        return SimpleNamespace(standing_assignments=lambda: tuple(self.entries))


async def test_a_policy_standing_entry_removed_no_longer_backs_its_assignment(
    make_settings: Factory,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    moto_endpoint: str,
) -> None:
    account = seeded.account_ids["payments-prod"]
    listed = Triple(account, seeded.permission_set_arns["DatabaseAdmin"], seeded.user_ids["frank"])
    out_of_band(sso, seeded, listed, proxy=proxy)  # type: ignore[arg-type]
    scope = {(listed.account_id, listed.permission_set_arn)}
    directory = Directory.from_region(region="us-east-1", endpoint_url=moto_endpoint)
    policy = _Policy([(account, "DatabaseAdmin", "frank")], directory)
    async with running(make_settings(), scope=scope) as w:
        standing = PolicyStanding(w.db, policy, outbox=w.worker.outbox, clock=w.clock)  # type: ignore[arg-type]
        # Recording is the leader's work (fenced by its lease): wait until it leads, or a
        # slow start makes record_once refuse (FencedError) instead of what is tested here.
        await eventually(lambda: _true(w.worker.lease.held), what="the worker leads")
        assert await standing.record_once() == 1
        await _swept(w)
        assert await w.standing(listed) == "policy"
        policy.entries.clear()  # the policy no longer lists it
        policy.version += 1
        await standing.record_once()
        assert await w.standing(listed) is None
        assert "dropped" in await w.events(None)
        # What remains is not Elevate's and nothing backs it: drift, reported (dry run).
        await eventually(
            lambda: _has_drift(w, listed, "unexpected_assignment:reported"),
            what="the drift reported",
        )
        assert proxy.count("DeleteAccountAssignment") == 0
    assert assignment_exists(sso, seeded, listed) == 1  # type: ignore[arg-type]
    await directory.aclose()
