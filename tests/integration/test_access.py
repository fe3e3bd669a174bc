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


NAMED = """\
schema_version: 1
approval_rules:
  - {{name: auto, auto_approve: true}}
eligibility:
  - name: named
    principals: {{users: [{users}]}}
    accounts: [{{ou: Sandbox}}, {{name: payments-prod}}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    approval: auto
"""


async def test_policy_names_are_resolved_to_ids_and_unknown_users_keep_the_last_good(
    directory: Directory, moto_endpoint: str, tmp_path: Path
) -> None:
    seeded = seed_organisation(moto_endpoint)
    erin_id = seeded.user_ids["erin"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(NAMED.format(users=f"alice, {erin_id}"))
    access = AccessControl(PolicyWatcher(policy), directory)
    good = access.load()
    assert good.user_ids == {"alice": seeded.user_ids["alice"], erin_id: erin_id}
    assert good.account_ids == {"payments-prod": frozenset({seeded.account_ids["payments-prod"]})}
    [warning] = [w for w in good.warnings if "selected by name" in w.message]
    assert warning.field == "eligibility[0].accounts[1]"

    policy.write_text(NAMED.format(users="alice, ALICE, no-such-user"))
    assert access.watcher.poll() == "failed"
    assert access.policy is good
    assert access.watcher.last_error is not None
    message = str(access.watcher.last_error)
    assert "no Identity Store user has the user name or user id 'ALICE'" in message
    assert "'no-such-user'" in message
