"""The portal's authorisation table (docs/portal.md), held against the app: every portal
route is in it and nothing else is, and every route called by each kind of caller —
signed in to the portal through the code flow, posting with their own CSRF token —
answers exactly what the table says (`login`: sent to sign in).

The callers and the requests they act on are the `/v1` table's (test_authorisation.py):
the same people, the same policy, a fresh request in the state each changing route needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.integration.request_api import authz_table
from tests.integration.request_api.authz_table import PortalRow, Row
from tests.integration.request_api.conftest import Api
from tests.integration.request_api.portal_client import session_of
from tests.integration.request_api.test_authorisation import (
    USERS,
    Scene,
    app_routes,
    assert_listed,
    body_for,
    submit,
    table_api,
    target,
    wrong_answers,
)

# Routes of the runtime, /v1 and Slack's: the other table's (docs/request-api.md).
NOT_PORTAL = (
    "/v1/",
    "/integrations/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/redoc",
)
Sessions = dict[str, tuple[str, str]]  # caller → (Cookie header, CSRF token)


def portal_routes(api: Api) -> set[str]:
    return {r for r in app_routes(api.app) if not r.split(" ", 1)[1].startswith(NOT_PORTAL)}


def answer(response: httpx.Response) -> str:
    location = response.headers.get("location", "")
    if response.status_code == 303 and location.startswith("/login"):
        return "login"
    return str(response.status_code)


def form_for(scene: Scene, row: PortalRow, caller: str, csrf: str) -> dict[str, str]:
    fields = {"csrf": csrf}
    if row.label == "POST /request":
        body: dict[str, Any] = body_for(scene.api, scene.owner(caller))
        fields |= {k: str(v) for k, v in body.items() if k != "break_glass"}
        fields["start_mode"] = "now"
    elif row.path.endswith("/decision"):
        fields |= {"decision": "approve", "comment": "as the table says"}
    elif row.path.endswith("/review"):
        fields["comment"] = "Reviewed against the incident"
    elif row.label == "POST /policy/explain":
        fields |= {"user": "alice", "account": "payments-prod", "permission_set": "ReadOnlyAccess"}
    return fields


async def call(scene: Scene, signed: Sessions, row: PortalRow, caller: str) -> str:
    rid = await target(scene, Row(row.method, row.path, {}), caller)
    path = row.path.replace("{request_id}", rid or "")
    user = USERS[caller]
    async with httpx.AsyncClient(base_url=scene.api.url, timeout=30) as client:
        cookie, csrf = signed.get(caller, ("", ""))
        if user is not None and row.label == "POST /logout":  # its own session, to end
            cookie, csrf = await session_of(scene.api, client, user)
        headers = {"Cookie": cookie} if cookie else {}
        if path.endswith("/events"):  # headers only: the stream itself does not end
            async with client.stream("GET", path, headers=headers) as response:
                return answer(response)
        if row.method == "POST":
            data = form_for(scene, row, caller, csrf)
            return answer(await client.post(path, data=data, headers=headers))
        return answer(await client.get(path, headers=headers))


async def test_every_portal_route_answers_every_signed_in_caller_as_the_table_says(
    start_api: Any, pg_url: str, tmp_path: Path
) -> None:
    api = await table_api(start_api, pg_url, tmp_path)
    table = authz_table.portal_rows()
    assert_listed([row.label for row in table], portal_routes(api), "docs/portal.md")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        signed: Sessions = {
            caller: await session_of(api, client, user)
            for caller, user in USERS.items()
            if user is not None
        }
    scene = Scene(api, {owner: await submit(api, owner) for owner in ("alice", "frank")})
    wrong = await wrong_answers(table, lambda row, caller: call(scene, signed, row, caller))
    assert wrong == [], "\n".join(wrong)
