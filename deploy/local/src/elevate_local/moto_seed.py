"""Seed moto with the organisation, Identity Center and CloudTrail plumbing Elevate expects.

`seed_organisation(endpoint_url)` creates, through boto3 over HTTP against a moto server:

- an Organization (ALL features) with OUs Workloads, Workloads/Prod, Workloads/NonProd,
  Sandbox and Security, and the member accounts in `ACCOUNTS` placed in them (the
  management account is moto's own, named "master");
- sso-admin permission sets `PERMISSION_SETS` (session durations set, AWS managed
  policies attached) on moto's default Identity Center instance;
- Identity Store users `USERS` and groups `GROUPS` with their memberships;
- one standing (pre-existing) user assignment, carol → ReadOnlyAccess on log-archive;
- the S3 bucket `elevate-cloudtrail` and the SQS queue `elevate-cloudtrail-notices`.

moto accepts duplicates (OUs, accounts, permission sets, memberships, assignments), so
every step looks up what exists first: seeding twice returns the same ids and creates
nothing new. Run it with `python -m elevate_local.moto_seed --endpoint-url URL [--json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_identitystore import IdentityStoreClient
    from mypy_boto3_identitystore.type_defs import AlternateIdentifierTypeDef
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sso_admin import SSOAdminClient

from elevate_local.seed_data import (
    ACCOUNTS,
    CLOUDTRAIL_BUCKET,
    CLOUDTRAIL_QUEUE,
    GROUPS,
    OU_PATHS,
    PERMISSION_SETS,
    STANDING_USER_ASSIGNMENTS,
    USERS,
    PermissionSetSpec,
    SeededOrganisation,
    StandingAssignment,
    UserSpec,
)

__all__ = [
    "ACCOUNTS",
    "CLOUDTRAIL_BUCKET",
    "CLOUDTRAIL_QUEUE",
    "GROUPS",
    "OU_PATHS",
    "PERMISSION_SETS",
    "STANDING_USER_ASSIGNMENTS",
    "USERS",
    "PermissionSetSpec",
    "SeededOrganisation",
    "StandingAssignment",
    "UserSpec",
    "main",
    "seed_organisation",
]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _unique_attribute(path: str, value: str) -> AlternateIdentifierTypeDef:
    # AttributeValue is a JSON document in the API model; AWS takes a plain string.
    document: Any = value
    return {"UniqueAttribute": {"AttributePath": path, "AttributeValue": document}}


def _clients(
    endpoint_url: str, region: str
) -> tuple[OrganizationsClient, SSOAdminClient, IdentityStoreClient, S3Client, SQSClient]:
    # moto's dummy credentials: seeding never uses the developer's real ones.
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy key
        region_name=region,
    )
    return (
        session.client("organizations", endpoint_url=endpoint_url),
        session.client("sso-admin", endpoint_url=endpoint_url),
        session.client("identitystore", endpoint_url=endpoint_url),
        session.client("s3", endpoint_url=endpoint_url),
        session.client("sqs", endpoint_url=endpoint_url),
    )


def _ensure_organization(org: OrganizationsClient) -> tuple[str, str]:
    try:
        description = org.describe_organization()["Organization"]
    except ClientError as error:
        if _error_code(error) != "AWSOrganizationsNotInUseException":
            raise
        description = org.create_organization(FeatureSet="ALL")["Organization"]
    return description["Id"], description["MasterAccountId"]


def _ensure_ous(org: OrganizationsClient, root_id: str) -> dict[str, str]:
    ou_ids: dict[str, str] = {}
    for path in OU_PATHS:
        parent_path, _, name = path.rpartition("/")
        parent_id = ou_ids[parent_path] if parent_path else root_id
        existing = {
            ou["Name"]: ou["Id"]
            for page in org.get_paginator("list_organizational_units_for_parent").paginate(
                ParentId=parent_id
            )
            for ou in page["OrganizationalUnits"]
        }
        if name in existing:
            ou_ids[path] = existing[name]
        else:
            created = org.create_organizational_unit(ParentId=parent_id, Name=name)
            ou_ids[path] = created["OrganizationalUnit"]["Id"]
    return ou_ids


def _create_account(org: OrganizationsClient, name: str) -> str:
    status = org.create_account(Email=f"aws+{name}@elevate.example", AccountName=name)[
        "CreateAccountStatus"
    ]
    deadline = time.monotonic() + 60
    while status["State"] == "IN_PROGRESS":
        if time.monotonic() > deadline:
            raise TimeoutError(f"account {name} still being created after 60s")
        time.sleep(0.5)
        status = org.describe_create_account_status(CreateAccountRequestId=status["Id"])[
            "CreateAccountStatus"
        ]
    if status["State"] != "SUCCEEDED":
        raise RuntimeError(f"creating account {name} failed: {status.get('FailureReason')}")
    return status["AccountId"]


def _ensure_accounts(
    org: OrganizationsClient, ou_ids: Mapping[str, str], management_id: str
) -> dict[str, str]:
    """Find or create each member account (under the root), then move it into its OU."""
    by_name = {
        account["Name"]: account["Id"]
        for page in org.get_paginator("list_accounts").paginate()
        for account in page["Accounts"]
    }
    account_ids = {name: id_ for name, id_ in by_name.items() if id_ == management_id}
    for name, ou_path in ACCOUNTS.items():
        account_id = by_name.get(name) or _create_account(org, name)
        account_ids[name] = account_id
        target = ou_ids[ou_path]
        parent = org.list_parents(ChildId=account_id)["Parents"][0]["Id"]
        if parent != target:
            org.move_account(
                AccountId=account_id, SourceParentId=parent, DestinationParentId=target
            )
    return account_ids


def _ensure_permission_sets(sso: SSOAdminClient, instance_arn: str) -> dict[str, str]:
    existing: dict[str, str] = {}
    for page in sso.get_paginator("list_permission_sets").paginate(InstanceArn=instance_arn):
        for listed_arn in page["PermissionSets"]:
            described = sso.describe_permission_set(
                InstanceArn=instance_arn, PermissionSetArn=listed_arn
            )
            existing.setdefault(described["PermissionSet"]["Name"], listed_arn)
    arns: dict[str, str] = {}
    for spec in PERMISSION_SETS:
        arn = existing.get(spec.name)
        if arn is None:
            arn = sso.create_permission_set(
                InstanceArn=instance_arn,
                Name=spec.name,
                Description=spec.description,
                SessionDuration=spec.session_duration,
            )["PermissionSet"]["PermissionSetArn"]
        _ensure_policies(sso, instance_arn, arn, spec)
        arns[spec.name] = arn
    return arns


def _ensure_policies(
    sso: SSOAdminClient, instance_arn: str, arn: str, spec: PermissionSetSpec
) -> None:
    if spec.managed_policy_arn is not None:
        attached = {
            policy["Arn"]
            for page in sso.get_paginator("list_managed_policies_in_permission_set").paginate(
                InstanceArn=instance_arn, PermissionSetArn=arn
            )
            for policy in page["AttachedManagedPolicies"]
        }
        if spec.managed_policy_arn not in attached:
            sso.attach_managed_policy_to_permission_set(
                InstanceArn=instance_arn,
                PermissionSetArn=arn,
                ManagedPolicyArn=spec.managed_policy_arn,
            )
    if spec.inline_policy is not None:
        current = sso.get_inline_policy_for_permission_set(
            InstanceArn=instance_arn, PermissionSetArn=arn
        ).get("InlinePolicy")
        if current != spec.inline_policy:
            sso.put_inline_policy_to_permission_set(
                InstanceArn=instance_arn, PermissionSetArn=arn, InlinePolicy=spec.inline_policy
            )


def _ensure_groups(ids: IdentityStoreClient, store_id: str) -> dict[str, str]:
    group_ids: dict[str, str] = {}
    for name in GROUPS:
        try:
            group_ids[name] = ids.get_group_id(
                IdentityStoreId=store_id,
                AlternateIdentifier=_unique_attribute("displayName", name),
            )["GroupId"]
        except ClientError as error:
            if _error_code(error) != "ResourceNotFoundException":
                raise
            group_ids[name] = ids.create_group(
                IdentityStoreId=store_id, DisplayName=name, Description=f"Elevate seed: {name}"
            )["GroupId"]
    return group_ids


def _ensure_users(
    ids: IdentityStoreClient, store_id: str, group_ids: Mapping[str, str]
) -> dict[str, str]:
    user_ids: dict[str, str] = {}
    for spec in USERS:
        try:
            user_id = ids.get_user_id(
                IdentityStoreId=store_id,
                AlternateIdentifier=_unique_attribute("userName", spec.user_name),
            )["UserId"]
        except ClientError as error:
            if _error_code(error) != "ResourceNotFoundException":
                raise
            user_id = ids.create_user(
                IdentityStoreId=store_id,
                UserName=spec.user_name,
                DisplayName=spec.display_name,
                Name={"GivenName": spec.given_name, "FamilyName": spec.family_name},
                Emails=[{"Value": spec.email, "Type": "work", "Primary": True}],
            )["UserId"]
        user_ids[spec.user_name] = user_id
        for group in spec.groups:
            try:
                ids.get_group_membership_id(
                    IdentityStoreId=store_id, GroupId=group_ids[group], MemberId={"UserId": user_id}
                )
            except ClientError as error:
                if _error_code(error) != "ResourceNotFoundException":
                    raise
                ids.create_group_membership(
                    IdentityStoreId=store_id, GroupId=group_ids[group], MemberId={"UserId": user_id}
                )
    return user_ids


def _ensure_standing_assignments(
    sso: SSOAdminClient,
    instance_arn: str,
    account_ids: Mapping[str, str],
    permission_set_arns: Mapping[str, str],
    user_ids: Mapping[str, str],
) -> tuple[StandingAssignment, ...]:
    result: list[StandingAssignment] = []
    for user_name, account_name, ps_name in STANDING_USER_ASSIGNMENTS:
        assignment = StandingAssignment(
            principal_type="USER",
            principal_name=user_name,
            principal_id=user_ids[user_name],
            account_name=account_name,
            account_id=account_ids[account_name],
            permission_set_name=ps_name,
            permission_set_arn=permission_set_arns[ps_name],
        )
        present = any(
            row["PrincipalType"] == "USER" and row["PrincipalId"] == assignment.principal_id
            for page in sso.get_paginator("list_account_assignments").paginate(
                InstanceArn=instance_arn,
                AccountId=assignment.account_id,
                PermissionSetArn=assignment.permission_set_arn,
            )
            for row in page["AccountAssignments"]
        )
        if not present:
            sso.create_account_assignment(
                InstanceArn=instance_arn,
                TargetId=assignment.account_id,
                TargetType="AWS_ACCOUNT",
                PermissionSetArn=assignment.permission_set_arn,
                PrincipalType="USER",
                PrincipalId=assignment.principal_id,
            )
        result.append(assignment)
    return tuple(result)


def _ensure_bucket(s3: S3Client, region: str) -> None:
    try:
        s3.head_bucket(Bucket=CLOUDTRAIL_BUCKET)
        return
    except ClientError as error:
        if _error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    if region == "us-east-1":
        s3.create_bucket(Bucket=CLOUDTRAIL_BUCKET)
    else:
        s3.create_bucket(
            Bucket=CLOUDTRAIL_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
        )


def _ensure_queue(sqs: SQSClient) -> str:
    try:
        return sqs.get_queue_url(QueueName=CLOUDTRAIL_QUEUE)["QueueUrl"]
    except ClientError as error:
        if _error_code(error) not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
    return sqs.create_queue(QueueName=CLOUDTRAIL_QUEUE)["QueueUrl"]


def seed_organisation(endpoint_url: str, region: str = "us-east-1") -> SeededOrganisation:
    """Create (or find) Elevate's local AWS world in moto; safe to call repeatedly."""
    org, sso, ids, s3, sqs = _clients(endpoint_url, region)

    organization_id, management_id = _ensure_organization(org)
    root_id = org.list_roots()["Roots"][0]["Id"]
    ou_ids = _ensure_ous(org, root_id)
    account_ids = _ensure_accounts(org, ou_ids, management_id)

    instance = sso.list_instances()["Instances"][0]
    instance_arn, store_id = instance["InstanceArn"], instance["IdentityStoreId"]
    permission_set_arns = _ensure_permission_sets(sso, instance_arn)

    group_ids = _ensure_groups(ids, store_id)
    user_ids = _ensure_users(ids, store_id, group_ids)
    standing = _ensure_standing_assignments(
        sso, instance_arn, account_ids, permission_set_arns, user_ids
    )

    _ensure_bucket(s3, region)
    queue_url = _ensure_queue(sqs)

    return SeededOrganisation(
        region=region,
        organization_id=organization_id,
        root_id=root_id,
        management_account_id=management_id,
        ou_ids=ou_ids,
        account_ids=account_ids,
        permission_set_arns=permission_set_arns,
        instance_arn=instance_arn,
        identity_store_id=store_id,
        user_ids=user_ids,
        group_ids=group_ids,
        cloudtrail_bucket=CLOUDTRAIL_BUCKET,
        cloudtrail_queue_url=queue_url,
        standing_assignments=standing,
    )


def _describe(seeded: SeededOrganisation) -> str:
    lines = [
        f"organization {seeded.organization_id}, root {seeded.root_id}, "
        f"management account {seeded.management_account_id}",
        f"identity center {seeded.instance_arn}, identity store {seeded.identity_store_id}",
    ]
    sections = {
        "OUs": seeded.ou_ids,
        "accounts": seeded.account_ids,
        "permission sets": seeded.permission_set_arns,
        "users": seeded.user_ids,
        "groups": seeded.group_ids,
    }
    for title, entries in sections.items():
        lines += [f"{title}:", *(f"  {name:<20} {value}" for name, value in entries.items())]
    lines += ["standing assignments:"] + [
        f"  {a.principal_name} → {a.permission_set_name} on {a.account_name}"
        for a in seeded.standing_assignments
    ]
    lines.append(
        f"cloudtrail bucket {seeded.cloudtrail_bucket}, queue {seeded.cloudtrail_queue_url}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m elevate_local.moto_seed", description="Seed moto for Elevate."
    )
    parser.add_argument("--endpoint-url", required=True, help="moto server URL")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    seeded = seed_organisation(args.endpoint_url, args.region)
    if args.json:
        json.dump(seeded.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_describe(seeded))
    return 0


if __name__ == "__main__":
    sys.exit(main())
