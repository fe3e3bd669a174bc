"""Who is who, through the API with real Identity Store users (moto): a second account of
the requester (same primary email) may not decide their request, and two users whose names
differ only by case folding (`sam` and long-s `am`) share neither requests nor eligibility."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.moto_seed import SeededOrganisation
from elevate_local.seed_data import external_id
from mypy_boto3_identitystore import IdentityStoreClient

from tests.integration.request_api.conftest import Api, Issuer
from tests.integration.request_api.test_requests import prod_admin

pytestmark = pytest.mark.integration

LONG_S = "\u017f"  # LATIN SMALL LETTER LONG S, which case-folds to "s"


class Users:
    """Identity Store users the test creates (signed-in-able: ExternalId of the issuer)."""

    def __init__(
        self, ids: IdentityStoreClient, seeded: SeededOrganisation, link: Callable[[str], None]
    ) -> None:
        self.ids, self.seeded, self.link, self.created = ids, seeded, link, list[str]()
        self.memberships = list[str]()

    def create(self, name: str, email: str, *groups: str) -> str:
        store = self.seeded.identity_store_id
        user_id = self.ids.create_user(
            IdentityStoreId=store,
            UserName=name,
            DisplayName=name,
            Name={"GivenName": name, "FamilyName": "Test"},
            Emails=[{"Value": email, "Type": "work", "Primary": True}],
        )["UserId"]
        self.created.append(user_id)
        for group in groups:
            membership = self.ids.create_group_membership(
                IdentityStoreId=store,
                GroupId=self.seeded.group_ids[group],
                MemberId={"UserId": user_id},
            )
            self.memberships.append(membership["MembershipId"])
        self.link(name)
        return user_id


@pytest.fixture
def users(
    seeded: SeededOrganisation, moto_endpoint: str, aws_proxy: AwsFaultProxy, issuer: Issuer
) -> Iterator[Users]:
    ids = boto3.client("identitystore", endpoint_url=moto_endpoint, region_name="us-east-1")
    created = Users(
        ids, seeded, lambda name: aws_proxy.external_ids.link(issuer.url, external_id(name), name)
    )
    yield created
    # Other tests find the seeded users by email, and list the groups: leave no trace
    # (moto keeps a deleted user's memberships).
    for membership_id in created.memberships:
        ids.delete_group_membership(
            IdentityStoreId=seeded.identity_store_id, MembershipId=membership_id
        )
    for user_id in created.created:
        ids.delete_user(IdentityStoreId=seeded.identity_store_id, UserId=user_id)


async def test_a_second_account_of_the_requester_may_not_decide(api: Api, users: Users) -> None:
    second = f"alice-second-{uuid.uuid4().hex[:8]}"
    users.create(second, "alice@elevate.example", "sre-leads")  # alice's, as an SRE lead
    async with api.client("alice") as alice:
        created = await alice.post("/v1/requests", json=prod_admin(api))
        assert created.status_code == 202, created.text
        rid = created.json()["id"]
    async with api.client(second) as client:
        refused = await client.post(f"/v1/requests/{rid}/approve", json={"comment": "me"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "nobody may decide their own request"
        assert (await client.get("/v1/approvals")).json() == []
    async with api.client("bob") as bob:  # someone else may
        assert rid in [r["id"] for r in (await bob.get("/v1/approvals")).json()]
        assert (await bob.post(f"/v1/requests/{rid}/approve")).status_code == 202


async def test_names_differing_only_by_case_folding_are_different_users(
    start_api: Callable[..., Any], pg_url: str, tmp_path: Path, users: Users
) -> None:
    tag = uuid.uuid4().hex[:8]
    sam, other = f"sam-{tag}", f"{LONG_S}am-{tag}"
    assert other.casefold() == sam
    users.create(sam, f"sam-{tag}@elevate.example")
    users.create(other, f"long-s-{tag}@elevate.example")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "schema_version: 1\n"
        "admin_groups: [elevate-admins]\n"
        "approval_rules:\n"
        "  - {name: leads, approver_groups: [sre-leads], required_approvals: 1}\n"
        "eligibility:\n"
        "  - name: named\n"
        f"    principals: {{users: [{sam}]}}\n"
        "    accounts: [{ou: Workloads/Prod}]\n"
        "    permission_sets: [AdministratorAccess]\n"
        "    max_duration: 4h\n"
        "    approval: leads\n"
    )
    api: Api = await start_api(pg_url, policy=policy)
    async with api.client(sam) as client:
        assert (await client.get("/v1/eligibility")).json()["items"] != []
        created = await client.post("/v1/requests", json=prod_admin(api, ticket=None))
        assert created.status_code == 202, created.text
        rid = created.json()["id"]
        assert (await client.get(f"/v1/requests/{rid}")).status_code == 200
    async with api.client(other) as client:
        assert (await client.get("/v1/eligibility")).json()["items"] == []
        refused = await client.post("/v1/requests", json=prod_admin(api, ticket=None))
        assert refused.status_code == 403, refused.text
        assert (await client.get(f"/v1/requests/{rid}")).status_code == 404
        assert (await client.get("/v1/requests")).json()["items"] == []
