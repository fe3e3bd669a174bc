"""Seeding moto over HTTP: the organisation, Identity Center and CloudTrail plumbing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
import pytest
from elevate_local.moto_seed import (
    ACCOUNTS,
    CLOUDTRAIL_BUCKET,
    CLOUDTRAIL_QUEUE,
    GROUPS,
    OU_PATHS,
    PERMISSION_SETS,
    USERS,
    SeededOrganisation,
    main,
    seed_organisation,
)

if TYPE_CHECKING:
    from mypy_boto3_identitystore import IdentityStoreClient
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_sso_admin import SSOAdminClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seeded(moto_endpoint: str) -> SeededOrganisation:
    return seed_organisation(moto_endpoint)


@pytest.fixture
def org(moto_endpoint: str) -> OrganizationsClient:
    return boto3.client("organizations", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def sso(moto_endpoint: str) -> SSOAdminClient:
    return boto3.client("sso-admin", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def identitystore(moto_endpoint: str) -> IdentityStoreClient:
    return boto3.client("identitystore", endpoint_url=moto_endpoint, region_name="us-east-1")


def _all_accounts(org: OrganizationsClient) -> list[tuple[str, str]]:
    return [
        (account["Name"], account["Id"])
        for page in org.get_paginator("list_accounts").paginate()
        for account in page["Accounts"]
    ]


def _ou_path_of(org: OrganizationsClient, child_id: str) -> tuple[str, ...]:
    names: list[str] = []
    parent = org.list_parents(ChildId=child_id)["Parents"][0]
    while parent["Type"] == "ORGANIZATIONAL_UNIT":
        ou = org.describe_organizational_unit(OrganizationalUnitId=parent["Id"])
        names.insert(0, ou["OrganizationalUnit"]["Name"])
        parent = org.list_parents(ChildId=parent["Id"])["Parents"][0]
    return tuple(names)


def test_organisation_tree(seeded: SeededOrganisation, org: OrganizationsClient) -> None:
    description = org.describe_organization()["Organization"]
    assert description["Id"] == seeded.organization_id
    assert description["FeatureSet"] == "ALL"
    assert description["MasterAccountId"] == seeded.management_account_id
    assert seeded.account_ids["master"] == seeded.management_account_id

    assert set(seeded.ou_ids) == set(OU_PATHS)
    for path, ou_id in seeded.ou_ids.items():
        assert _ou_path_of(org, ou_id) == tuple(path.split("/")[:-1])
        described = org.describe_organizational_unit(OrganizationalUnitId=ou_id)
        assert described["OrganizationalUnit"]["Name"] == path.split("/")[-1]

    listed = dict(_all_accounts(org))
    assert len(ACCOUNTS) >= 6
    for name, ou_path in ACCOUNTS.items():
        account_id = seeded.account_ids[name]
        assert listed[name] == account_id
        assert len(account_id) == 12
        assert account_id.isdigit()
        assert _ou_path_of(org, account_id) == tuple(ou_path.split("/"))

    prod = org.list_accounts_for_parent(ParentId=seeded.ou_ids["Workloads/Prod"])["Accounts"]
    assert {a["Name"] for a in prod} == {"payments-prod", "data-prod"}


def test_permission_sets(seeded: SeededOrganisation, sso: SSOAdminClient) -> None:
    instances = sso.list_instances()["Instances"]
    assert [i["InstanceArn"] for i in instances] == [seeded.instance_arn]
    assert instances[0]["IdentityStoreId"] == seeded.identity_store_id

    listed = set(sso.list_permission_sets(InstanceArn=seeded.instance_arn)["PermissionSets"])
    assert set(seeded.permission_set_arns.values()) <= listed
    for spec in PERMISSION_SETS:
        arn = seeded.permission_set_arns[spec.name]
        described = sso.describe_permission_set(
            InstanceArn=seeded.instance_arn, PermissionSetArn=arn
        )["PermissionSet"]
        assert described["Name"] == spec.name
        assert described["SessionDuration"] == spec.session_duration
        if spec.managed_policy_arn:
            attached = sso.list_managed_policies_in_permission_set(
                InstanceArn=seeded.instance_arn, PermissionSetArn=arn
            )["AttachedManagedPolicies"]
            assert [p["Arn"] for p in attached] == [spec.managed_policy_arn]
        if spec.inline_policy:
            inline = sso.get_inline_policy_for_permission_set(
                InstanceArn=seeded.instance_arn, PermissionSetArn=arn
            )["InlinePolicy"]
            assert json.loads(inline)["Statement"]


def test_users_and_groups(seeded: SeededOrganisation, identitystore: IdentityStoreClient) -> None:
    store = seeded.identity_store_id
    assert set(seeded.group_ids) == set(GROUPS)
    group_names = {
        g["GroupId"]: g["DisplayName"]
        for g in identitystore.list_groups(IdentityStoreId=store)["Groups"]
    }
    for name, group_id in seeded.group_ids.items():
        assert group_names[group_id] == name

    for spec in USERS:
        user_id = seeded.user_ids[spec.user_name]
        user = identitystore.describe_user(IdentityStoreId=store, UserId=user_id)
        assert user["UserName"] == spec.user_name
        assert user["DisplayName"] == spec.display_name
        assert user["Emails"][0]["Value"] == f"{spec.user_name}@elevate.example"
        memberships = identitystore.list_group_memberships_for_member(
            IdentityStoreId=store, MemberId={"UserId": user_id}
        )["GroupMemberships"]
        assert sorted(group_names[m["GroupId"]] for m in memberships) == sorted(spec.groups)

    alice = {s.user_name: s for s in USERS}["alice"]
    assert set(alice.groups) == {"engineers", "sre"}


def test_standing_assignment(seeded: SeededOrganisation, sso: SSOAdminClient) -> None:
    [standing] = seeded.standing_assignments
    assert (standing.principal_name, standing.account_name, standing.permission_set_name) == (
        "carol",
        "log-archive",
        "ReadOnlyAccess",
    )
    rows = sso.list_account_assignments(
        InstanceArn=seeded.instance_arn,
        AccountId=seeded.account_ids["log-archive"],
        PermissionSetArn=seeded.permission_set_arns["ReadOnlyAccess"],
    )["AccountAssignments"]
    # Other suites may grant on the same account; carol's standing row is there once.
    principals = [(r["PrincipalType"], r["PrincipalId"]) for r in rows]
    assert principals.count(("USER", seeded.user_ids["carol"])) == 1


def test_cloudtrail_bucket_and_queue(seeded: SeededOrganisation, moto_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    assert seeded.cloudtrail_bucket == CLOUDTRAIL_BUCKET
    assert CLOUDTRAIL_BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert sqs.get_queue_url(QueueName=CLOUDTRAIL_QUEUE)["QueueUrl"] == seeded.cloudtrail_queue_url


def test_seeding_again_is_idempotent(
    seeded: SeededOrganisation,
    moto_endpoint: str,
    org: OrganizationsClient,
    sso: SSOAdminClient,
    identitystore: IdentityStoreClient,
) -> None:
    accounts_before = sorted(_all_accounts(org))
    again = seed_organisation(moto_endpoint)
    assert again == seeded
    assert sorted(_all_accounts(org)) == accounts_before

    store = seeded.identity_store_id
    user_names = [u["UserName"] for u in identitystore.list_users(IdentityStoreId=store)["Users"]]
    for spec in USERS:
        assert user_names.count(spec.user_name) == 1
    group_names = [
        g["DisplayName"] for g in identitystore.list_groups(IdentityStoreId=store)["Groups"]
    ]
    for name in GROUPS:
        assert group_names.count(name) == 1
    alice_memberships = identitystore.list_group_memberships_for_member(
        IdentityStoreId=store, MemberId={"UserId": seeded.user_ids["alice"]}
    )["GroupMemberships"]
    assert len(alice_memberships) == 2

    names = [
        sso.describe_permission_set(InstanceArn=seeded.instance_arn, PermissionSetArn=arn)[
            "PermissionSet"
        ]["Name"]
        for arn in sso.list_permission_sets(InstanceArn=seeded.instance_arn)["PermissionSets"]
    ]
    for ps_spec in PERMISSION_SETS:
        assert names.count(ps_spec.name) == 1
    for path in OU_PATHS:
        parent, _, name = path.rpartition("/")
        parent_id = seeded.ou_ids[parent] if parent else seeded.root_id
        siblings = org.list_organizational_units_for_parent(ParentId=parent_id)
        assert [ou["Name"] for ou in siblings["OrganizationalUnits"]].count(name) == 1
    rows = sso.list_account_assignments(
        InstanceArn=seeded.instance_arn,
        AccountId=seeded.account_ids["log-archive"],
        PermissionSetArn=seeded.permission_set_arns["ReadOnlyAccess"],
    )["AccountAssignments"]
    assert [r["PrincipalId"] for r in rows].count(seeded.user_ids["carol"]) == 1


def test_cli_prints_json(
    seeded: SeededOrganisation, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--endpoint-url", moto_endpoint, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["account_ids"] == seeded.account_ids
    assert printed["user_ids"]["alice"] == seeded.user_ids["alice"]
    assert printed["standing_assignments"][0]["principal_name"] == "carol"


def test_cli_prints_text(
    seeded: SeededOrganisation, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--endpoint-url", moto_endpoint]) == 0
    out = capsys.readouterr().out
    assert seeded.account_ids["payments-prod"] in out
    assert "carol → ReadOnlyAccess on log-archive" in out
