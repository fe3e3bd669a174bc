"""Auditors' and admins' surface: the request history with filters and cursors, its CSV
export (formula-safe), break-glass reviews, the policy and its explanation — and every
one of those reads recorded as an `AuditTrailRead` event that reaches Kafka."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
from elevate_core.policy import load_policy
from elevate_request_api.main import SPEC

from tests.harness import database, outbox, relayed
from tests.integration.request_api.conftest import ROOT, Api
from tests.integration.request_api.test_requests import prod_admin


def break_glass(api: Api, account: str = "payments-prod", **overrides: Any) -> dict[str, Any]:
    body = {
        "account_id": api.seeded.account_ids[account],
        "permission_set": "AdministratorAccess",
        "duration_minutes": 30,
        "justification": "INC-7: payments are down",
        "break_glass": True,
    }
    body.update(overrides)
    return body


async def submit(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/requests", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def reads(api: Api) -> list[dict[str, Any]]:
    """The AuditTrailRead events request-api wrote (relayed to Kafka)."""
    async with database(api.settings.database_url, SPEC.migrations) as db:
        await relayed(db)
        return [e.data for e in await outbox(db) if e.name == "AuditTrailRead"]


async def test_auditors_filter_and_page_every_request_and_each_read_is_recorded(
    api: Api,
) -> None:
    async with api.client("alice") as alice:
        ordinary = [await submit(alice, prod_admin(api)) for _ in range(3)]
        urgent = await submit(alice, break_glass(api))
    async with api.client("carol") as carol:
        first = await carol.get("/v1/audit/requests", params={"limit": 2})
        assert first.status_code == 200, first.text
        page = first.json()
        second = await carol.get(
            "/v1/audit/requests", params={"limit": 2, "cursor": page["next_cursor"]}
        )
        ids = [r["id"] for r in page["items"] + second.json()["items"]]
        assert ids == [urgent, *reversed(ordinary)]  # newest first, no gap, no repeat
        glass = (await carol.get("/v1/audit/requests", params={"break_glass": "true"})).json()
        assert [r["id"] for r in glass["items"]] == [urgent]
        pending = (await carol.get("/v1/audit/requests", params={"review": "pending"})).json()
        assert [r["id"] for r in pending["items"]] == [urgent]
        mine = await carol.get(
            "/v1/audit/requests",
            params={"requester": "alice", "permission_set": "AdministratorAccess"},
        )
        assert len(mine.json()["items"]) == 4
        nobody = await carol.get("/v1/audit/requests", params={"requester": "Alice"})
        assert nobody.json()["items"] == []  # names are exact: Alice is not alice
    recorded = await reads(api)
    assert len(recorded) == 6
    assert all(r["reader"]["user_name"] == "carol" for r in recorded)
    assert {"break_glass": "true", "limit": "100"} in [r["filters"] for r in recorded]
    assert recorded[1]["filters"]["cursor"] == page["next_cursor"]


async def test_only_auditors_and_admins_read_the_history(api: Api) -> None:
    for user in ("alice", "bob"):
        async with api.client(user) as client:
            response = await client.get("/v1/audit/requests")
            assert response.status_code == 403
            assert response.json()["type"] == "urn:elevate:problem:not-allowed"
            assert (await client.get("/v1/requests", params={"scope": "all"})).status_code == 403
    async with api.client("dave") as dave:
        assert (await dave.get("/v1/audit/requests")).status_code == 200
        # scope=all is the same read, recorded the same way: it cannot dodge the record
        assert (await dave.get("/v1/requests", params={"scope": "all"})).status_code == 200
    assert [r["reader"]["user_name"] for r in await reads(api)] == ["dave", "dave"]


async def test_csv_export_is_formula_safe_and_recorded(api: Api) -> None:
    hostile = '=HYPERLINK("http://evil.example","x") restart\nsecond line'
    async with api.client("alice") as alice:
        rid = await submit(alice, prod_admin(api, justification=hostile))
        other = await submit(alice, prod_admin(api, justification="@SUM(A1) and -2+3 letters"))
    async with api.client("carol") as carol:
        by_param = await carol.get("/v1/audit/requests", params={"format": "csv"})
        by_accept = await carol.get("/v1/audit/requests", headers={"Accept": "text/csv"})
    assert by_param.status_code == 200, by_param.text
    assert by_param.headers["content-type"].startswith("text/csv")
    assert "attachment" in by_param.headers["content-disposition"]
    assert by_accept.text == by_param.text
    table = list(csv.DictReader(io.StringIO(by_param.text)))
    cells = {row["id"]: row for row in table}
    assert cells[rid]["justification"] == "'" + hostile  # kept whole, made inert
    assert cells[other]["justification"].startswith("'@")
    assert cells[rid]["requester"] == "alice"
    assert cells[rid]["account_id"] == api.seeded.account_ids["payments-prod"]
    for row in table:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    recorded = await reads(api)
    assert [r["format"] for r in recorded] == ["csv", "csv"]


async def test_break_glass_review_by_an_auditor_is_visible_and_filterable(api: Api) -> None:
    async with api.client("alice") as alice:
        urgent = await submit(alice, break_glass(api))
        ordinary = await submit(alice, prod_admin(api))
        mine = await alice.post(f"/v1/requests/{urgent}/review", json={"comment": "fine"})
        assert mine.status_code == 403  # not an auditor (and the requester)
    async with api.client("carol") as carol:
        empty = await carol.post(f"/v1/requests/{urgent}/review", json={"comment": " "})
        assert empty.status_code == 422
        response = await carol.post(
            f"/v1/requests/{urgent}/review", json={"comment": "Checked INC-7: justified"}
        )
        assert response.status_code == 202, response.text
        again = await carol.post(f"/v1/requests/{urgent}/review", json={"comment": "again"})
        assert again.status_code == 409
        not_glass = await carol.post(f"/v1/requests/{ordinary}/review", json={"comment": "x"})
        assert not_glass.status_code == 409
        detail = (await carol.get(f"/v1/requests/{urgent}")).json()
        done = (await carol.get("/v1/audit/requests", params={"review": "done"})).json()
    assert detail["review"] == "done"
    reviewed = detail["timeline"][-1]
    assert (reviewed["action"], reviewed["actor"]) == ("break_glass_reviewed", "carol")
    assert reviewed["comment"] == "Checked INC-7: justified"
    assert [r["id"] for r in done["items"]] == [urgent]
    async with database(api.settings.database_url, SPEC.migrations) as db:
        await relayed(db)
        events = [e for e in await outbox(db, key=urgent) if e.name == "BreakGlassReviewed"]
    assert [e.data["reviewer"]["user_name"] for e in events] == ["carol"]


async def test_nobody_reviews_their_own_break_glass_access(
    start_api: Any, pg_url: str, tmp_path: Path
) -> None:
    # An auditor who is also an SRE uses break-glass: another auditor must review it.
    policy = tmp_path / "policy.yaml"
    source = (ROOT / "deploy/local/policy.yaml").read_text()
    policy.write_text(
        source.replace("auditor_groups: [auditors]", "auditor_groups: [auditors, sre]")
    )
    api: Api = await start_api(pg_url, policy=policy)
    async with api.client("alice") as alice:
        urgent = await submit(alice, break_glass(api))
        own = await alice.post(f"/v1/requests/{urgent}/review", json={"comment": "all fine"})
    assert own.status_code == 403
    assert "own" in own.json()["detail"]
    async with api.client("carol") as carol:
        assert (
            await carol.post(f"/v1/requests/{urgent}/review", json={"comment": "ok"})
        ).status_code == 202


async def test_the_policy_and_its_explanation(api: Api) -> None:
    async with api.client("carol") as carol:
        policy = await carol.get("/v1/policy")
        assert policy.status_code == 200, policy.text
        refused = await carol.post(
            "/v1/policy/explain",
            json={"user": "alice", "account": "payments-prod", "permission_set": "ReadOnlyAccess"},
        )
        assert refused.status_code == 403  # explaining is for admins
    body = policy.json()
    assert body["version"] == load_policy(ROOT / "deploy/local/policy.yaml").version
    assert [r["name"] for r in body["document"]["approval_rules"]] == [
        "auto",
        "one-sre-lead",
        "two-sre-leads",
    ]
    assert body["loaded_at"] is not None
    async with api.client("dave") as dave:
        yes = await dave.post(
            "/v1/policy/explain",
            json={
                "user": "alice",
                "account": "payments-prod",
                "permission_set": "AdministratorAccess",
            },
        )
        no = await dave.post(
            "/v1/policy/explain",
            json={"user": "erin", "account": "payments-prod", "permission_set": "DatabaseAdmin"},
        )
        unknown = await dave.post(
            "/v1/policy/explain",
            json={"user": "mallory", "account": "payments-prod", "permission_set": "X"},
        )
    assert yes.status_code == 200, yes.text
    assert yes.json()["eligible"] is True
    assert yes.json()["terms"]["approval_rule"] == "one-sre-lead"
    assert "sre-prod-admin" in yes.json()["matched_rules"]
    assert no.json()["eligible"] is False
    assert any("erin" in reason for t in no.json()["traces"] for reason in t["reasons"])
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "urn:elevate:problem:unknown-subject"
    recorded = await reads(api)
    # Refused calls record nothing (they roll back, and revealed nothing).
    assert [r["resource"] for r in recorded] == ["policy", "policy-explain", "policy-explain"]
    assert recorded[1]["filters"] == {
        "user": "alice",
        "account": "payments-prod",
        "permission_set": "AdministratorAccess",
        "break_glass": "false",
    }
