"""audit-ingest's managed scope follows the policy and the real organisation."""

from __future__ import annotations

from pathlib import Path

from elevate_audit_ingest.scope import PolicyScope
from elevate_audit_ingest.service import ManagedScope
from elevate_core.access import AccessControl
from elevate_core.directory.aws import Directory
from elevate_core.policy import PolicyWatcher
from elevate_local.moto_seed import seed_organisation

ROOT = Path(__file__).resolve().parents[3]


async def test_scope_is_what_the_example_policy_makes_requestable(moto_endpoint: str) -> None:
    seeded = seed_organisation(moto_endpoint)
    directory = Directory.from_region(region="us-east-1", endpoint_url=moto_endpoint)
    access = AccessControl(PolicyWatcher(ROOT / "deploy/local/policy.yaml"), directory)
    access.load()
    scope = ManagedScope()
    pairs = await PolicyScope(access, scope).refresh()
    ids = seeded.account_ids
    assert scope.pairs == pairs
    assert (ids["payments-prod"], "AdministratorAccess") in pairs
    assert (ids["payments-prod"], "DatabaseAdmin") in pairs
    assert (ids["sandbox-alice"], "ReadOnlyAccess") in pairs
    assert (
        ids["payments-staging"],
        "AdministratorAccess",
    ) in pairs  # break-glass
    assert (ids["log-archive"], "AdministratorAccess") not in pairs  # Security is excluded
    assert (ids["log-archive"], "ReadOnlyAccess") not in pairs  # only carol's standing one
    assert (seeded.management_account_id, "AdministratorAccess") not in pairs
    await directory.aclose()
