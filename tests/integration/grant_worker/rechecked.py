"""grant-worker as it runs in production: every approval re-checked against a policy file
and the directory (over the fault proxy) before it is served. Requesters must then be
real: each test makes Identity Store users of its own, so the shared moto stays apart."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import boto3
from elevate_core.access import AccessControl
from elevate_core.app import bootstrap
from elevate_core.clock import ManualClock
from elevate_core.directory.aws import Directory
from elevate_core.events.models import Person, RequestApproved, RequestSnapshot
from elevate_core.migrate import upgrade
from elevate_core.policy import PolicyWatcher
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.main import SPEC, build, policy_scope
from elevate_grant_worker.recheck import policy_recheck
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_local.moto_seed import SeededOrganisation

from tests import harness
from tests.integration.grant_worker.conftest import T0, Running

# Engineers may have PowerUserAccess or ReadOnlyAccess on the NonProd accounts
# (payments-staging) for up to 4 hours; nothing names the management account.
POLICY = """\
schema_version: 1
auditor_groups: [auditors]
admin_groups: [elevate-admins]
approval_rules:
  - {name: auto, auto_approve: true}
eligibility:
  - name: engineers-staging
    principals: {groups: [engineers]}
    accounts: [{ou: Workloads/NonProd}]
    permission_sets: [PowerUserAccess, ReadOnlyAccess]
    max_duration: 4h
    approval: auto
"""
PERMISSION_SET = "PowerUserAccess"
ACCOUNT = "payments-staging"


def write_policy(directory: Path) -> Path:
    path = directory / "grant-worker-policy.yaml"
    path.write_text(POLICY)
    return path


def new_member(moto_endpoint: str, seeded: SeededOrganisation, group: str = "engineers") -> Person:
    """A fresh Identity Store user in `group` (nobody else's test touches them)."""
    ids = boto3.client("identitystore", endpoint_url=moto_endpoint, region_name=seeded.region)
    name = f"member-{uuid.uuid4().hex[:12]}"
    user_id = ids.create_user(
        IdentityStoreId=seeded.identity_store_id,
        UserName=name,
        DisplayName=name,
        Name={"GivenName": "Test", "FamilyName": "Member"},
    )["UserId"]
    ids.create_group_membership(
        IdentityStoreId=seeded.identity_store_id,
        GroupId=seeded.group_ids[group],
        MemberId={"UserId": user_id},
    )
    return Person(user_name=name, user_id=user_id)


def triple_of(seeded: SeededOrganisation, person: Person) -> Triple:
    return Triple(
        seeded.account_ids[ACCOUNT], seeded.permission_set_arns[PERMISSION_SET], person.user_id
    )


def approval_for(
    person: Person,
    *,
    account_id: str,
    permission_set: str,
    permission_set_arn: str,
    start: datetime,
    end: datetime,
) -> RequestApproved:
    """An approval as approval publishes it: well formed, whatever it says."""
    return RequestApproved(
        snapshot=RequestSnapshot(
            request_id=uuid.uuid4(),
            requester=person,
            account_id=account_id,
            permission_set_name=permission_set,
            permission_set_arn=permission_set_arn,
            start=start,
            end=end,
            justification="incident 42",
            matched_rule="engineers-staging",
            policy_version="v1",
            approvers=("bob",),
        ),
        auto_approved=True,
    )


def access_for(policy_file: Path, aws_endpoint: str) -> AccessControl:
    """grant-worker's own policy copy and directory (as `create_app` builds them)."""
    access = AccessControl(
        PolicyWatcher(policy_file),
        Directory.from_region(region="us-east-1", endpoint_url=aws_endpoint),
    )
    access.load()
    return access


@contextlib.asynccontextmanager
async def running_rechecked(
    settings: GrantWorkerSettings, access: AccessControl, *, clock: ManualClock | None = None
) -> AsyncIterator[Running]:
    """grant-worker's workers in this process, re-checking as `create_app` wires them (the
    reconciler sweep left out: it is not what these tests are about)."""
    ctx = bootstrap(settings)
    await upgrade(ctx.db, SPEC.migrations)
    clock = clock or ManualClock(T0)
    check = policy_recheck(access, policy_scope(access), horizon=settings.request_horizon)
    build(ctx, settings, clock=clock, recheck=check)
    try:
        async with harness.running_service(ctx, timeout=10, stragglers="cancel") as workers:
            yield Running(ctx, clock, workers)
    finally:
        await access.directory.aclose()
        await ctx.db.dispose()
