"""The authorisation table of docs/request-api.md, held against the app itself: every
route the app has (from its router, so routes kept out of the OpenAPI document count) is
in the table and nothing else is, and every route called as each kind of caller answers
exactly the status the table gives.

The callers are people of the example organisation; a policy a little wider than the
example's lets frank (sre-leads) request what his own group approves, so "requester as
approver" is a real case. Each call that changes a request gets a fresh one in the state
the route acts on, so no call depends on another's leftovers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elevate_core.events.models import RequestApproved
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.harness import eventually, publish_events
from tests.integration.request_api import authz_table
from tests.integration.request_api.authz_table import Row
from tests.integration.request_api.conftest import ROOT, Api
from tests.integration.request_api.test_schema_fuzz import snapshot_of

USERS: dict[str, str | None] = {
    "anonymous": None,
    "requester": "alice",
    "another user": "erin",
    "approver": "bob",
    "requester as approver": "frank",
    "auditor": "carol",
    "admin": "dave",
}
# A path parameter the router declares as a fixed set of words: one table row per word.
SPELLED_OUT = {"decision": ("approve", "reject")}
# frank (sre-leads) may ask for what his own group approves, and use break-glass.
FRANKS_RULES = """\
  - name: leads-prod-readonly
    principals:
      groups: [sre-leads]
    accounts:
      - ou: Workloads/Prod
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    approval: one-sre-lead

  - name: leads-break-glass
    break_glass: true
    principals:
      groups: [sre-leads]
    accounts:
      - ou: Sandbox
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    review_groups: [auditors]

"""


def app_routes(app: FastAPI) -> set[str]:
    """Every (method, path) the app answers, through included routers too — HEAD aside:
    Starlette answers it for a GET route as that GET without its body."""
    found: set[str] = set()
    for route in iter_route_contexts(app.routes):
        assert route.path is not None, f"a route without a path: {route!r}"
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths = [route.path]
            for name, words in SPELLED_OUT.items():
                slot = "{" + name + "}"
                paths = [p.replace(slot, w) for p in paths for w in (words if slot in p else ("",))]
            found.update(f"{method} {p}" for p in paths)
    assert found, "no routes found: has FastAPI changed how it lists them?"
    return found


@dataclass
class Scene:
    """The requests the calls act on, made beforehand."""

    api: Api
    shown: dict[str, str]  # owner → a pending request to read

    def owner(self, caller: str) -> str:
        return "frank" if caller == "requester as approver" else "alice"


def body_for(api: Api, owner: str, *, break_glass: bool = False) -> dict[str, Any]:
    if owner == "frank":
        account = "sandbox-shared" if break_glass else "payments-prod"
        body: dict[str, Any] = {"account_id": api.seeded.account_ids[account]}
        body.update(permission_set="ReadOnlyAccess", duration_minutes=30)
    else:
        body = {"account_id": api.seeded.account_ids["payments-prod"], "duration_minutes": 30}
        body.update(permission_set="AdministratorAccess", ticket="OPS-9")
    body.update(justification="OPS-9: the authorisation table", break_glass=break_glass)
    return body


async def submit(api: Api, owner: str, *, break_glass: bool = False) -> str:
    async with api.client(owner) as client:
        response = await client.post(
            "/v1/requests", json=body_for(api, owner, break_glass=break_glass)
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])


async def approved(api: Api, owner: str) -> str:
    """A request approval has approved (the test publishes what approval would)."""
    rid = await submit(api, owner)
    async with api.client(owner) as client:
        d = (await client.get(f"/v1/requests/{rid}")).json()
    snapshot = snapshot_of(api, d, approvers=("grace",))
    await publish_events(
        api.kafka, RequestApproved(snapshot=snapshot), prefix=api.settings.topic_prefix
    )

    async def shows_approved() -> bool:
        async with api.client(owner) as client:
            return bool((await client.get(f"/v1/requests/{rid}")).json()["status"] == "approved")

    await eventually(shows_approved, timeout=60, what=f"{rid} approved")
    return rid


async def target(scene: Scene, row: Row, caller: str) -> str | None:
    """The request a call acts on, in the state its route needs (None: no request)."""
    if "{request_id}" not in row.path:
        return None
    owner = scene.owner(caller)
    verb = row.path.rsplit("/", 1)[-1]
    if caller == "anonymous" or verb in ("{request_id}", "stream"):
        return scene.shown[owner]  # (nothing is changed)
    if verb == "revoke":
        return await approved(scene.api, owner)
    return await submit(scene.api, owner, break_glass=verb == "review")


def payload(scene: Scene, row: Row, caller: str) -> dict[str, Any] | None:
    if row.label == "POST /v1/requests":
        return body_for(scene.api, scene.owner(caller))
    if row.label == "POST /v1/policy/explain":
        return {"user": "alice", "account": "payments-prod", "permission_set": "ReadOnlyAccess"}
    if row.path.endswith("/review"):
        return {"comment": "Reviewed against the incident"}
    return {"comment": "as the table says"} if row.method == "POST" else None


async def call(scene: Scene, row: Row, caller: str) -> int:
    rid = await target(scene, row, caller)
    path = row.path.replace("{request_id}", rid or "")
    user = USERS[caller]
    async with scene.api.client(user) as client:
        if path.endswith("/stream"):  # headers only: the stream itself does not end
            async with client.stream("GET", path) as response:
                return response.status_code
        response = await client.request(row.method, path, json=payload(scene, row, caller))
        return response.status_code


async def table_api(start_api: Any, pg_url: str, tmp_path: Path) -> Api:
    """request-api on the example policy widened by FRANKS_RULES."""
    policy = tmp_path / "policy.yaml"
    source = (ROOT / "deploy/local/policy.yaml").read_text()
    policy.write_text(re.sub(r"(?m)^standing_assignments:", FRANKS_RULES + r"\g<0>", source))
    # Slack's interaction route on: its callers must bring Slack's signature, not a token.
    secret, token = tmp_path / "slack-signing-secret", tmp_path / "slack-bot-token"
    secret.write_text("the table's signing secret")
    token.write_text("xoxb-the-table")
    api: Api = await start_api(
        pg_url, policy=policy, slack_signing_secret_file=secret, slack_bot_token_file=token
    )
    return api


def assert_listed(listed: list[str], routes: set[str], doc: str) -> None:
    assert len(set(listed)) == len(listed), "a route is listed twice"
    assert sorted(routes - set(listed)) == [], f"routes {doc} does not list"
    assert sorted(set(listed) - routes) == [], "listed routes the app does not have"


async def wrong_answers(
    rows: Sequence[Any], call_one: Callable[[Any, str], Awaitable[object]]
) -> list[str]:
    """Every (row, caller) called, a few at once (quicker, and the server is not
    swamped); what did not answer as the row says."""
    calls = [(row, caller) for row in rows for caller in authz_table.CALLERS]
    gate = asyncio.Semaphore(8)

    async def one(row: Any, caller: str) -> object:
        async with gate:
            return await call_one(row, caller)

    got = await asyncio.gather(*(one(row, caller) for row, caller in calls))
    return [
        f"{row.label} as {caller}: expected {row.expected[caller]}, got {status}"
        for (row, caller), status in zip(calls, got, strict=True)
        if status != row.expected[caller]
    ]


async def test_every_route_is_in_the_table_and_answers_every_caller_as_it_says(
    start_api: Any, pg_url: str, tmp_path: Path
) -> None:
    api = await table_api(start_api, pg_url, tmp_path)
    table = authz_table.rows()
    assert_listed([row.label for row in table], app_routes(api.app), "docs/request-api.md")
    scene = Scene(api, {owner: await submit(api, owner) for owner in ("alice", "frank")})
    wrong = await wrong_answers(table, lambda row, caller: call(scene, row, caller))
    assert wrong == [], "\n".join(wrong)
