"""What a caller may pick from: eligibility searched and paged, and the accounts it covers
(every account for auditors and admins)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.request_api.conftest import Api


async def every_page(client: httpx.AsyncClient, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        response = await client.get(
            path, params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def pair(item: dict[str, Any]) -> tuple[str, str, bool]:
    return item["account_name"], item["permission_set"], item["break_glass"]


async def test_eligibility_pages_add_up_to_the_whole_and_search_narrows_it(api: Api) -> None:
    async with api.client("alice") as alice:
        whole = await every_page(alice, "/v1/eligibility", limit=500)
        paged = await every_page(alice, "/v1/eligibility", limit=2)
        prod = await every_page(alice, "/v1/eligibility", q="prod")
        by_ou = await every_page(alice, "/v1/eligibility", q="sandbox")
        by_id = await every_page(
            alice, "/v1/eligibility", q=api.seeded.account_ids["data-prod"][3:9]
        )
        bad = await alice.get("/v1/eligibility", params={"cursor": "not-ours"})
    assert len(whole) > 4
    assert paged == whole  # pages in order, none missing, none repeated
    assert [pair(i) for i in whole] == sorted(
        (pair(i) for i in whole), key=lambda p: (p[0], p[1], p[2])
    )
    assert {i["account_name"] for i in prod} == {"payments-prod", "data-prod", "payments-staging"}
    assert {i["ou_path"] for i in by_ou} == {"Sandbox"}
    assert {i["account_name"] for i in by_id} >= {"data-prod"}
    assert bad.status_code == 422
    assert bad.json()["type"] == "urn:elevate:problem:invalid-cursor"


async def test_accounts_are_the_eligible_ones_or_all_for_auditors(api: Api) -> None:
    async with api.client("erin") as erin:
        hers = await every_page(erin, "/v1/accounts")
    async with api.client("carol") as carol:
        everything = await every_page(carol, "/v1/accounts", limit=3)
        security = await every_page(carol, "/v1/accounts", q="security")
    # erin (engineers): the sandboxes' read-only access only
    assert {a["account_name"] for a in hers} == {"sandbox-alice", "sandbox-shared"}
    assert {a["account_id"] for a in everything} == set(api.seeded.account_ids.values())
    assert {a["account_name"] for a in security} == {"log-archive", "security-tooling"}
