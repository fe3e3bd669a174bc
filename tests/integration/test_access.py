"""A running service warns about approval rules that cannot be satisfied by the people
the Identity Store actually has in the approver groups."""

from __future__ import annotations

from pathlib import Path

import pytest
from elevate_core.access import AccessControl
from elevate_core.directory.aws import Directory
from elevate_core.policy import PolicyWatcher
from elevate_local.moto_seed import seed_organisation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def directory(moto_endpoint: str) -> Directory:
    seed_organisation(moto_endpoint)
    return Directory.from_region(region="us-east-1", endpoint_url=moto_endpoint)


async def test_group_members_are_read_from_the_identity_store(directory: Directory) -> None:
    members = await directory.group_members(["sre-leads", "no-such-group"])
    assert sorted(members["sre-leads"]) == ["bob", "frank", "grace"]
    assert "no-such-group" not in members


async def test_example_policy_is_reachable(directory: Directory) -> None:
    access = AccessControl(PolicyWatcher(ROOT / "deploy/local/policy.yaml"), directory)
    access.load()
    assert await access.check_reachability() == ()


async def test_unreachable_rule_is_reported(directory: Directory, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "schema_version: 1\n"
        "approval_rules:\n"
        "  - {name: two-auditors, approver_groups: [auditors], required_approvals: 2}\n"
        "eligibility:\n"
        "  - name: engineers-prod\n"
        "    principals: {groups: [engineers]}\n"
        "    accounts: [{ou: Workloads/Prod}]\n"
        "    permission_sets: [ReadOnlyAccess]\n"
        "    max_duration: 1h\n"
        "    approval: two-auditors\n"
    )
    access = AccessControl(PolicyWatcher(policy), directory)
    access.load()
    [warning] = await access.check_reachability()
    assert "required_approvals" in warning
    assert ":3:" in warning  # the line of the rule in the file
