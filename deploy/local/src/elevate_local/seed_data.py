"""The example organisation `make dev` and the tests seed into moto: OUs, accounts,
permission sets, people, groups, a standing assignment and the CloudTrail plumbing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

CLOUDTRAIL_BUCKET = "elevate-cloudtrail"
CLOUDTRAIL_QUEUE = "elevate-cloudtrail-notices"

# OU paths root → leaf; parents come before their children.
OU_PATHS: tuple[str, ...] = (
    "Workloads",
    "Workloads/Prod",
    "Workloads/NonProd",
    "Sandbox",
    "Security",
)

# Member account name → OU path.
ACCOUNTS: Mapping[str, str] = {
    "payments-prod": "Workloads/Prod",
    "data-prod": "Workloads/Prod",
    "payments-staging": "Workloads/NonProd",
    "sandbox-alice": "Sandbox",
    "sandbox-shared": "Sandbox",
    "log-archive": "Security",
    "security-tooling": "Security",
}


@dataclass(frozen=True, slots=True)
class PermissionSetSpec:
    name: str
    description: str
    session_duration: str  # ISO-8601, PT1H..PT12H
    managed_policy_arn: str | None = None
    inline_policy: str | None = None


# moto 5.2.5 rejects AWS managed policies whose path is not "/" (it reads "path" where its
# data says "Path"), so DatabaseAdmin carries an inline policy instead of
# arn:aws:iam::aws:policy/job-function/DatabaseAdministrator.
_DATABASE_ADMIN_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["rds:*", "dynamodb:*"], "Resource": "*"}],
    }
)
_AWS_POLICY = "arn:aws:iam::aws:policy/"

PERMISSION_SETS: tuple[PermissionSetSpec, ...] = (
    PermissionSetSpec(
        "AdministratorAccess", "Full access", "PT1H", _AWS_POLICY + "AdministratorAccess"
    ),
    PermissionSetSpec("PowerUserAccess", "All but IAM", "PT4H", _AWS_POLICY + "PowerUserAccess"),
    PermissionSetSpec("ReadOnlyAccess", "Read-only", "PT8H", _AWS_POLICY + "ReadOnlyAccess"),
    PermissionSetSpec("DatabaseAdmin", "Databases", "PT2H", inline_policy=_DATABASE_ADMIN_POLICY),
)


@dataclass(frozen=True, slots=True)
class UserSpec:
    user_name: str
    given_name: str
    family_name: str
    groups: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    @property
    def email(self) -> str:
        return f"{self.user_name}@elevate.example"

    @property
    def external_id(self) -> str:
        return external_id(self.user_name)


# The identity provider's immutable subject of a local user, as SCIM would have written it
# into the Identity Store's ExternalIds (a GUID, like Entra ID's oid): deliberately not the
# user name, so nothing can work by matching names.
_SUBJECTS = uuid.UUID("6f1c5d52-6a43-4d55-9c1e-2f6b0e7c1a10")


def external_id(user_name: str) -> str:
    return str(uuid.uuid5(_SUBJECTS, user_name))


GROUPS: tuple[str, ...] = ("engineers", "sre", "sre-leads", "auditors", "elevate-admins")

USERS: tuple[UserSpec, ...] = (
    UserSpec("alice", "Alice", "Archer", ("engineers", "sre")),
    UserSpec("erin", "Erin", "Evans", ("engineers",)),
    UserSpec("bob", "Bob", "Baker", ("sre-leads",)),
    UserSpec("frank", "Frank", "Fischer", ("sre-leads",)),
    UserSpec("grace", "Grace", "Green", ("sre-leads",)),
    UserSpec("carol", "Carol", "Chen", ("auditors",)),
    UserSpec("dave", "Dave", "Dixon", ("elevate-admins",)),
)


@dataclass(frozen=True, slots=True)
class StandingAssignment:
    """An account assignment that exists outside Elevate (not granted by it)."""

    principal_type: str
    principal_name: str
    principal_id: str
    account_name: str
    account_id: str
    permission_set_name: str
    permission_set_arn: str


# (user name, account name, permission set name)
STANDING_USER_ASSIGNMENTS: tuple[tuple[str, str, str], ...] = (
    ("carol", "log-archive", "ReadOnlyAccess"),
)


@dataclass(frozen=True)
class SeededOrganisation:
    region: str
    organization_id: str
    root_id: str
    management_account_id: str
    ou_ids: dict[str, str]  # "Workloads/Prod" → ou-…
    account_ids: dict[str, str]  # member accounts and the management account ("master")
    permission_set_arns: dict[str, str]
    instance_arn: str
    identity_store_id: str
    user_ids: dict[str, str]
    group_ids: dict[str, str]
    cloudtrail_bucket: str
    cloudtrail_queue_url: str
    standing_assignments: tuple[StandingAssignment, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return asdict(self)
