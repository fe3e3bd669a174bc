"""Separation of duties by person, with real Identity Store users (moto): a second account
of the same person (same primary email, another user name and id) neither approves the
person's own request nor counts twice towards N-of-M."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest
from elevate_core.events.models import Person
from elevate_local.moto_seed import SeededOrganisation
from mypy_boto3_identitystore import IdentityStoreClient

from tests.integration.approval.conftest import InProcess, Requests

pytestmark = pytest.mark.integration


class SecondAccounts:
    """Creates users in moto's Identity Store (and deletes them afterwards)."""

    def __init__(self, ids: IdentityStoreClient, seeded: SeededOrganisation) -> None:
        self.ids, self.seeded, self.created = ids, seeded, list[str]()
        self.memberships = list[str]()

    def of(self, person: str, *, group: str) -> Person:
        """A second sign-in for `person`: another user name and id, their primary email."""
        name = f"{person}-second-{uuid.uuid4().hex[:8]}"
        store = self.seeded.identity_store_id
        user_id = self.ids.create_user(
            IdentityStoreId=store,
            UserName=name,
            DisplayName=f"{person} (second account)",
            Name={"GivenName": person, "FamilyName": "Second"},
            Emails=[{"Value": f"{person}@elevate.example", "Type": "work", "Primary": True}],
        )["UserId"]
        self.created.append(user_id)
        membership = self.ids.create_group_membership(
            IdentityStoreId=store,
            GroupId=self.seeded.group_ids[group],
            MemberId={"UserId": user_id},
        )
        self.memberships.append(membership["MembershipId"])
        return Person(user_name=name, user_id=user_id)


@pytest.fixture
def second_accounts(seeded: SeededOrganisation, moto_endpoint: str) -> Iterator[SecondAccounts]:
    ids = boto3.client("identitystore", endpoint_url=moto_endpoint, region_name="us-east-1")
    accounts = SecondAccounts(ids, seeded)
    yield accounts
    # Other tests find the seeded users by email, and list the groups: leave no trace
    # (moto keeps a deleted user's memberships).
    for membership_id in accounts.memberships:
        ids.delete_group_membership(
            IdentityStoreId=seeded.identity_store_id, MembershipId=membership_id
        )
    for user_id in accounts.created:
        ids.delete_user(IdentityStoreId=seeded.identity_store_id, UserId=user_id)


async def test_a_second_account_is_the_same_person(
    approval: InProcess, requests: Requests, second_accounts: SecondAccounts
) -> None:
    alice_too = second_accounts.of("alice", group="sre-leads")  # the requester, as a lead
    bob_too = second_accounts.of("bob", group="sre-leads")
    req = requests.submitted("DatabaseAdmin")  # two-sre-leads: two distinct people
    rid = req.request_id
    await approval.feed(req, subject=rid)

    await approval.feed(requests.decision(req, alice_too), subject=rid)
    await approval.feed(requests.decision(req, "bob"), subject=rid)
    await approval.feed(requests.decision(req, bob_too), subject=rid)
    assert (await approval.row(rid)).status == "pending"  # bob's second vote did not count
    await approval.feed(requests.decision(req, "frank"), subject=rid)

    emitted = await approval.emitted(rid)
    assert [name for name, _ in emitted] == [
        "ApprovalRequested",
        "DecisionRefused",
        "DecisionRecorded",
        "DecisionRefused",
        "DecisionRecorded",
        "RequestApproved",
    ]
    refused = [
        (d["approver"]["user_name"], d["reason"]) for n, d in emitted if n == "DecisionRefused"
    ]
    assert refused == [(alice_too.user_name, "requester"), (bob_too.user_name, "already_decided")]
    assert emitted[5][1]["snapshot"]["approvers"] == ["bob", "frank"]
    log = await approval.log(rid)
    assert [e.actor_person_key for e in log if e.outcome == "counted"] == [
        "email:bob@elevate.example",
        "email:frank@elevate.example",
    ]
