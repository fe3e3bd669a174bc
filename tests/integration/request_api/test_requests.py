"""Requests and decisions through the API: eligibility, refusals, exactly one
`RequestSubmitted` (also with a repeated Idempotency-Key and with Kafka down), and
who may decide, cancel and revoke."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elevate_core.kafka.acls import Principal
from elevate_core.policy import load_policy
from elevate_local.kafka import KafkaBroker
from elevate_request_api.main import SPEC

from tests.harness import (
    create_topics,
    data_of,
    database,
    headers_of,
    outbox,
    read_all,
    read_to_end,
    relayed,
)
from tests.integration.request_api.conftest import Api


def prod_admin(api: Api, **overrides: Any) -> dict[str, Any]:
    body = {
        "account_id": api.seeded.account_ids["payments-prod"],
        "permission_set": "AdministratorAccess",
        "duration_minutes": 60,
        "justification": "OPS-1: restart the payments API",
        "ticket": "OPS-1",
    }
    body.update(overrides)
    return body


async def submitted_events(api: Api, expect: int) -> list[Any]:
    topic = f"{api.settings.topic_prefix}elevate.requests.v1"
    records = await read_all(api.kafka, topic, expect=expect, timeout=30)
    return [r for r in records if headers_of(r)["ce_type"] == "io.elevate.request.submitted.v1"]


async def test_eligibility_lists_what_the_policy_allows(api: Api) -> None:
    async with api.client("alice") as client:
        items = (await client.get("/v1/eligibility")).json()["items"]
    pairs = {(i["account_name"], i["permission_set"], i["break_glass"]) for i in items}
    assert ("payments-prod", "AdministratorAccess", False) in pairs
    assert ("sandbox-alice", "ReadOnlyAccess", False) in pairs
    assert ("log-archive", "AdministratorAccess", True) not in pairs  # Security excluded
    prod = next(
        i
        for i in items
        if i["account_name"] == "payments-prod"
        and i["permission_set"] == "AdministratorAccess"
        and not i["break_glass"]
    )
    assert prod["ou_path"] == "Workloads/Prod"
    assert prod["max_duration_minutes"] == 240
    assert prod["approval_needed"] is True
    assert prod["ticket_required"] is True
    async with api.client("carol") as client:
        assert (await client.get("/v1/eligibility")).json()["items"] == []


async def test_submit_is_accepted_once_with_location(api: Api) -> None:
    async with api.client("alice") as client:
        response = await client.post("/v1/requests", json=prod_admin(api))
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        detail = (await client.get(location)).json()
    assert detail["status"] == "pending"
    assert detail["requester"] == "alice"
    assert detail["approval_rule"] == "one-sre-lead"
    assert detail["timeline"][0]["action"] == "submitted"
    [event] = await submitted_events(api, expect=1)
    data = data_of(event)
    assert data["request_id"] == detail["id"]
    assert data["requester"]["user_id"] == api.seeded.user_ids["alice"]
    assert data["permission_set_arn"] == api.seeded.permission_set_arns["AdministratorAccess"]
    assert data["matched_rule"] == "sre-prod-admin"
    assert event.key == detail["id"].encode()


async def test_same_idempotency_key_concurrently_yields_one_request(api: Api) -> None:
    async with api.client("alice") as client:
        headers = {"Idempotency-Key": "retry-1"}
        responses = await asyncio.gather(
            *(client.post("/v1/requests", json=prod_admin(api), headers=headers) for _ in range(5))
        )
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["id"] for r in responses}) == 1
        different = await client.post(
            "/v1/requests", json=prod_admin(api, duration_minutes=30), headers=headers
        )
        assert different.status_code == 422
        mine = (await client.get("/v1/requests")).json()["items"]
    assert len(mine) == 1
    # The five were answered after their transactions (outbox rows included) committed:
    # once the relay has dealt with every row so far, all they will publish is on the topic.
    async with database(api.settings.database_url, SPEC.migrations) as db:
        await relayed(db)
        written = [e.name for e in await outbox(db)]
    assert written == ["RequestSubmitted"]
    topic = f"{api.settings.topic_prefix}elevate.requests.v1"
    records = await read_to_end(api.kafka, topic)
    assert len(records) == 1


@pytest.mark.parametrize(
    ("user", "overrides", "status", "detail"),
    [
        ("erin", {}, 403, "not eligible"),
        ("alice", {"duration_minutes": 300}, 422, "exceeds the maximum"),
        ("alice", {"start": "2020-01-01T00:00:00Z"}, 422, "start: must not be in the past"),
        (
            "alice",
            {"start": (datetime.now(UTC) + timedelta(days=90)).isoformat()},
            422,
            "start: must be within",
        ),
        ("alice", {"justification": "   "}, 422, "justification"),
        ("alice", {"ticket": None}, 422, "a ticket is required"),
        ("alice", {"ticket": "not a ticket"}, 422, "does not match"),
        # "no such account" answers as "not yours": existence is not told
        ("alice", {"account_id": "999999999999"}, 403, "not eligible"),
        ("alice", {"permission_set": "NoSuchSet"}, 403, "not eligible"),
        ("alice", {"account_id": "12345"}, 422, "account_id"),
    ],
)
async def test_refusals(
    api: Api, user: str, overrides: dict[str, Any], status: int, detail: str
) -> None:
    async with api.client(user) as client:
        response = await client.post("/v1/requests", json=prod_admin(api, **overrides))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert detail in response.json()["detail"]


async def test_decisions_only_by_approvers_and_never_by_the_requester(
    start_api: Callable[..., Any], pg_url: str, tmp_path: Path
) -> None:
    # bob is an SRE lead *and* may request: his own approve must still be refused.
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "schema_version: 1\n"
        "admin_groups: [elevate-admins]\n"
        "approval_rules:\n"
        "  - {name: leads, approver_groups: [sre-leads, sre], required_approvals: 1}\n"
        "eligibility:\n"
        "  - name: leads-prod\n"
        "    principals: {groups: [sre-leads, sre], users: [bob]}\n"
        "    accounts: [{ou: Workloads/Prod}]\n"
        "    permission_sets: [AdministratorAccess]\n"
        "    max_duration: 4h\n"
        "    approval: leads\n"
    )
    api: Api = await start_api(pg_url, policy=policy)
    async with api.client("bob") as bob:
        created = await bob.post("/v1/requests", json=prod_admin(api, ticket=None))
        assert created.status_code == 202, created.text
        rid = created.json()["id"]
        own = await bob.post(f"/v1/requests/{rid}/approve", json={"comment": "lgtm"})
        assert own.status_code == 403
        assert "own request" in own.json()["detail"]
        assert (await bob.get("/v1/approvals")).json() == []
    async with api.client("erin") as erin:  # not an approver, may not see it either
        refused = await erin.post(f"/v1/requests/{rid}/approve")
        unknown = await erin.post(f"/v1/requests/{uuid.uuid4()}/approve")
        for response in (refused, unknown):  # the same answer as for no request at all
            assert response.status_code == 404
            assert response.json()["type"] == "urn:elevate:problem:not-found"
        assert refused.json()["detail"] == f"no request {rid}"  # its approval rule unsaid
        assert (await erin.get(f"/v1/requests/{rid}")).status_code == 404
    async with api.client("dave") as dave:  # admin, not an approver
        refused = await dave.post(f"/v1/requests/{rid}/approve")
        assert refused.status_code == 403
    async with api.client("grace") as grace:
        assert [r["id"] for r in (await grace.get("/v1/approvals")).json()] == [rid]
        ok = await grace.post(f"/v1/requests/{rid}/approve", json={"comment": "go"})
        assert ok.status_code == 202, ok.text
    topic = f"{api.settings.topic_prefix}elevate.requests.v1"
    records = await read_all(api.kafka, topic, expect=2)
    decisions = [
        data_of(r)
        for r in records
        if headers_of(r)["ce_type"] == "io.elevate.decision.submitted.v1"
    ]
    assert decisions == [
        {
            "request_id": rid,
            "decision": "approve",
            "comment": "go",
            "approver": {
                "user_name": "grace",
                "user_id": api.seeded.user_ids["grace"],
                "email": "grace@elevate.example",
            },
            # The policy grace was checked under: approval re-reads it if it differs.
            "policy_version": load_policy(api.settings.policy_file).version,
        }
    ]


async def test_cancel_and_revoke_rules(api: Api) -> None:
    async with api.client("alice") as alice:
        rid = (await alice.post("/v1/requests", json=prod_admin(api))).json()["id"]
        assert (await alice.post(f"/v1/requests/{rid}/revoke")).status_code == 409
    async with api.client("grace") as grace:  # an approver may see it, not cancel it
        assert (await grace.post(f"/v1/requests/{rid}/cancel")).status_code == 403
    async with api.client("alice") as alice:
        cancelled = await alice.post(f"/v1/requests/{rid}/cancel")
        assert cancelled.status_code == 202
        assert cancelled.json()["status"] == "cancelled"
        again = await alice.post(f"/v1/requests/{rid}/cancel")
        assert again.status_code == 409
        listed = (await alice.get("/v1/requests", params={"status": "cancelled"})).json()
        assert [r["id"] for r in listed["items"]] == [rid]


async def test_pagination_and_scope(api: Api) -> None:
    async with api.client("alice") as alice:
        body = {
            "account_id": api.seeded.account_ids["sandbox-alice"],
            "permission_set": "ReadOnlyAccess",
            "duration_minutes": 30,
            "justification": "look around",
        }
        ids = [(await alice.post("/v1/requests", json=body)).json()["id"] for _ in range(5)]
        first = (await alice.get("/v1/requests", params={"limit": 2})).json()
        second = (
            await alice.get("/v1/requests", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        third = (
            await alice.get("/v1/requests", params={"limit": 2, "cursor": second["next_cursor"]})
        ).json()
        assert third["next_cursor"] is None
        seen = [r["id"] for page in (first, second, third) for r in page["items"]]
        assert sorted(seen) == sorted(ids)
        assert (await alice.get("/v1/requests", params={"scope": "all"})).status_code == 403
    async with api.client("carol") as carol:  # auditor
        everyone = (await carol.get("/v1/requests", params={"scope": "all"})).json()
        assert len(everyone["items"]) == 5


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """Set up before (so torn down after) the API that uses it."""
    broker = KafkaBroker(tmp_path / "kafka", ephemeral=True)
    broker.start()
    yield broker
    broker.kill()


async def test_requests_are_accepted_while_kafka_is_down(
    own_broker: KafkaBroker, start_api: Callable[..., Any], pg_url: str, topic_prefix: str
) -> None:
    own_broker.allow(topic_prefix)
    await create_topics(own_broker.endpoint(), f"{topic_prefix}elevate.requests.v1")
    own_broker.stop()
    api: Api = await start_api(pg_url, endpoint=own_broker.endpoint(Principal.REQUEST_API))
    async with api.client("alice") as alice:
        response = await alice.post("/v1/requests", json=prod_admin(api))
        assert response.status_code == 202
        assert (await alice.get("/readyz")).status_code == 200
    own_broker.start()
    records = await read_all(
        own_broker.endpoint(), f"{topic_prefix}elevate.requests.v1", expect=1, timeout=90
    )
    assert [data_of(r)["request_id"] for r in records] == [response.json()["id"]]
