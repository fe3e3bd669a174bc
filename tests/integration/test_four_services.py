"""The product once, end to end, on the real stack: the four services as processes on
real Kafka, PostgreSQL (one database each) and seeded moto, called with real bearer
tokens from the local OIDC provider.

alice (sre) asks for AdministratorAccess on payments-prod, which the example policy sends
to one SRE lead; bob approves; the assignment appears in Identity Center; alice revokes;
it disappears; and the audit topic carries the OCSF 3005 Assign and then Revoke records
that tie back to the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster

from tests.helpers import data_of
from tests.stack import Stack, audit_until_revoke, is_user_access, start_stack, until

# The example policy's rule for this triple is one-sre-lead, with a ticket required.
REQUESTER, APPROVER = "alice", "bob"
ACCOUNT, PERMISSION_SET = "payments-prod", "AdministratorAccess"


@pytest.fixture
async def stack(
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    catalog: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    async with start_stack(kafka, postgres, moto_endpoint, catalog, tmp_path) as s:
        yield s


async def _status(stack: Stack, client: httpx.AsyncClient, location: str, want: str) -> None:
    async def probe() -> tuple[bool, object]:
        response = await client.get(location)
        if response.status_code != 200:
            return False, f"{response.status_code} {response.text}"
        body = response.json()
        return body["status"] == want, body

    await until(probe, f"the request becoming {want!r}", stack)


async def test_request_approved_activated_revoked_and_audited(stack: Stack) -> None:
    seeded = stack.seeded
    account_id = seeded.account_ids[ACCOUNT]
    alice_id = seeded.user_ids[REQUESTER]
    before = stack.assigned(ACCOUNT, PERMISSION_SET)
    assert alice_id not in before, "moto already holds the assignment under test"

    async with stack.client(REQUESTER) as alice, stack.client(APPROVER) as bob:
        created = await alice.post(
            "/v1/requests",
            json={
                "account_id": account_id,
                "permission_set": PERMISSION_SET,
                "duration_minutes": 60,
                "justification": "OPS-4711: rotate the payments database credentials",
                "ticket": "OPS-4711",
            },
        )
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "pending"  # a human must decide
        request_id, location = created.json()["id"], created.headers["Location"]

        waiting = (await bob.get("/v1/approvals")).json()
        assert request_id in [r["id"] for r in waiting], waiting
        approved = await bob.post(
            f"/v1/requests/{request_id}/approve", json={"comment": "go ahead"}
        )
        assert approved.status_code == 202, approved.text

        await _status(stack, alice, location, "active")
        assert stack.assigned(ACCOUNT, PERMISSION_SET).count(alice_id) == 1

        revoked = await alice.post(f"/v1/requests/{request_id}/revoke", json={"comment": "done"})
        assert revoked.status_code == 202, revoked.text
        await _status(stack, alice, location, "revoked")
        assert alice_id not in stack.assigned(ACCOUNT, PERMISSION_SET)

    records = await audit_until_revoke(stack, request_id)
    _check_audit(records, stack, request_id)


def _check_audit(records: list[Any], stack: Stack, request_id: str) -> None:
    seeded = stack.seeded
    account_id = seeded.account_ids[ACCOUNT]
    assigns = [r for r in records if is_user_access(r, request_id, activity=1)]
    [revoke] = [r for r in records if is_user_access(r, request_id, activity=2)]
    assert revoke.key.decode() == request_id
    doc = data_of(revoke)
    assert doc["type_uid"] == 300502
    assert doc["user"]["name"] == REQUESTER
    assert doc["user"]["uid"] == seeded.user_ids[REQUESTER]
    assert doc["privileges"] == [PERMISSION_SET]
    assert doc["resource"]["uid"] == account_id
    assert doc["resource"]["name"] == ACCOUNT
    grant = doc["enrichments"][0]["data"]
    assert grant["request_id"] == request_id
    assert grant["account_id"] == account_id
    assert grant["permission_set"] == PERMISSION_SET
    assert grant["permission_set_arn"] == seeded.permission_set_arns[PERMISSION_SET]
    assert grant["approvers"] == [APPROVER]
    assert grant["reason"] == "revoked"
    # The Assign came first: same key, so same partition, at a lower offset.
    assert [(r.partition, r.offset < revoke.offset) for r in assigns] == [
        (revoke.partition, True)
    ], [data_of(r) for r in assigns]
    assert data_of(assigns[0])["time"] <= doc["time"]
