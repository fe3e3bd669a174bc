"""The read model follows events put on the topics through every status, and an SSE
client on one replica sees changes another replica consumed."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from elevate_core.events.base import Event
from elevate_core.events.models import (
    DecisionRecorded,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    GrantScheduled,
    Person,
    RequestApproved,
    RequestExpired,
    RequestRejected,
    RequestSnapshot,
)

from tests.harness import eventually, processed_past, publish_events, publish_raw
from tests.integration.request_api.conftest import Api
from tests.integration.request_api.portal_client import session_of

NOW = datetime.now(UTC)


class Emitter:
    """Plays approval and grant-worker: publishes their events as they would."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def send(self, *events: Event) -> None:
        await publish_events(self.api.kafka, *events, prefix=self.api.settings.topic_prefix)


async def submit(api: Api) -> tuple[str, RequestSnapshot]:
    body = {
        "account_id": api.seeded.account_ids["payments-prod"],
        "permission_set": "AdministratorAccess",
        "duration_minutes": 60,
        "justification": "OPS-7 deploy",
        "ticket": "OPS-7",
    }
    async with api.client("alice") as alice:
        response = await alice.post("/v1/requests", json=body)
        assert response.status_code == 202, response.text
        detail = (await alice.get(response.headers["Location"])).json()
    snapshot = RequestSnapshot(
        request_id=uuid.UUID(detail["id"]),
        requester=Person(user_name="alice", user_id=api.seeded.user_ids["alice"]),
        account_id=detail["account_id"],
        account_name=detail["account_name"],
        permission_set_name="AdministratorAccess",
        permission_set_arn=api.seeded.permission_set_arns["AdministratorAccess"],
        start=datetime.fromisoformat(detail["start"]),
        end=datetime.fromisoformat(detail["end"]),
        justification="OPS-7 deploy",
        ticket="OPS-7",
        matched_rule="sre-prod-admin",
        policy_version=detail["policy_version"],
        approvers=("grace",),
        approval_rule="one-sre-lead",
    )
    return detail["id"], snapshot


async def status_of(api: Api, rid: str) -> str:
    async with api.client("alice") as alice:
        status: str = (await alice.get(f"/v1/requests/{rid}")).json()["status"]
        return status


async def reaches(api: Api, rid: str, status: str) -> None:
    async def check() -> bool:
        return await status_of(api, rid) == status

    await eventually(check, timeout=60, what=f"status {status}")


async def test_every_status_of_the_table(api: Api) -> None:
    emit = Emitter(api)
    grace = Person(user_name="grace", user_id=api.seeded.user_ids["grace"])
    gid = uuid.uuid4()

    rid, snap = await submit(api)
    assert await status_of(api, rid) == "pending"
    await emit.send(RequestApproved(snapshot=snap))
    await reaches(api, rid, "approved")
    await emit.send(GrantScheduled(grant_id=gid, snapshot=snap, activates_at=snap.start))
    await reaches(api, rid, "scheduled")
    await emit.send(GrantActivated(grant_id=gid, snapshot=snap, activated_at=NOW))
    await reaches(api, rid, "active")
    await emit.send(
        GrantRevocationFailed(grant_id=gid, snapshot=snap, error="Throttling", attempts=5)
    )
    await reaches(api, rid, "revocation_failed")
    await emit.send(
        GrantEnded(
            grant_id=gid, snapshot=snap, reason="revoked", ended_at=NOW, assignment_removed=True
        )
    )
    await reaches(api, rid, "revoked")
    async with api.client("alice") as alice:
        detail = (await alice.get(f"/v1/requests/{rid}")).json()
    actions = [t["action"] for t in detail["timeline"]]
    assert actions == [
        "submitted",
        "approved",
        "grant_scheduled",
        "grant_activated",
        "revocation_failed",
        "grant_ended_revoked",
    ]
    assert detail["approvers"] == ["grace"]

    for reason, status in (("expired", "ended"), ("cancelled", "cancelled"), ("drift", "revoked")):
        rid2, snap2 = await submit(api)
        await emit.send(
            RequestApproved(snapshot=snap2),
            GrantActivated(grant_id=gid, snapshot=snap2, activated_at=NOW),
            GrantEnded(
                grant_id=gid, snapshot=snap2, reason=reason, ended_at=NOW, assignment_removed=True
            ),
        )
        await reaches(api, rid2, status)

    rid3, _ = await submit(api)
    await emit.send(
        RequestRejected(request_id=uuid.UUID(rid3), rejected_by=grace, comment="not now")
    )
    await reaches(api, rid3, "rejected")
    rid4, _ = await submit(api)
    await emit.send(
        RequestExpired(
            request_id=uuid.UUID(rid4), pending_since=NOW, expired_at=NOW + timedelta(hours=4)
        )
    )
    await reaches(api, rid4, "expired")
    rid5, snap5 = await submit(api)
    await emit.send(
        RequestApproved(snapshot=snap5),
        GrantFailed(grant_id=gid, snapshot=snap5, reason="AccessDenied"),
    )
    await reaches(api, rid5, "error")
    rid6, _ = await submit(api)
    async with api.client("alice") as alice:
        assert (await alice.post(f"/v1/requests/{rid6}/cancel")).status_code == 202
    await reaches(api, rid6, "cancelled")


async def test_sse_on_one_replica_sees_a_change_consumed_by_another(
    start_api: Callable[..., Any], pg_url: str
) -> None:
    projector: Api = await start_api(pg_url)  # consumes the topics
    front: Api = await start_api(pg_url, read_model_consumer=False)  # serves only
    rid, snap = await submit(front)
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        token = front.issuer.token("alice")
        async with (
            httpx.AsyncClient(base_url=front.url, timeout=60) as client,
            client.stream(
                "GET", f"/v1/requests/{rid}/stream", headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["status"] == "active":
                        return

    listener = asyncio.create_task(listen())
    await eventually(lambda: _first(seen), what="the initial status event")
    await Emitter(projector).send(
        RequestApproved(snapshot=snap),
        GrantActivated(grant_id=uuid.uuid4(), snapshot=snap, activated_at=NOW),
    )
    await asyncio.wait_for(listener, 60)
    statuses = [s["status"] for s in seen]
    assert statuses[0] == "pending"
    assert statuses[-1] == "active"
    assert statuses == sorted(set(statuses), key=statuses.index)  # one event per change


async def _first(seen: list[dict[str, Any]]) -> bool:
    return bool(seen)


async def test_correlated_activity_is_attached_to_its_request(api: Api) -> None:
    """OCSF records audit-ingest publishes (built here with its own mapping) become the
    request's activity; uncovered and assign/revoke records do not."""
    from elevate_audit_ingest.domain import GrantWindow, correlate, parse_record
    from elevate_audit_ingest.ocsf import api_activity
    from elevate_local.simulate_activity import call_record

    rid, snap = await submit(api)
    window = GrantWindow(
        grant_id=str(uuid.uuid4()),
        request_id=rid,
        user_name="alice",
        user_id=api.seeded.user_ids["alice"],
        account_id=snap.account_id,
        permission_set_name="AdministratorAccess",
        start=NOW - timedelta(minutes=5),
        end=NOW + timedelta(minutes=55),
        justification=snap.justification,
    )
    records = []
    after_end = window.end + timedelta(hours=2)  # past the grace, its session begun inside
    calls = (
        ("ListBuckets", "alice", NOW, None),
        ("TerminateInstances", "mallory", NOW, None),
        ("DeleteBucket", "alice", NOW + timedelta(minutes=1), "AccessDenied"),
        ("GetObject", "alice", after_end, None),
        ("GetBucketAcl", "alice", window.start - timedelta(minutes=10), None),  # no grant yet
    )
    for name, user, at, error in calls:
        raw = call_record(
            user=user,
            account_id=snap.account_id,
            permission_set="AdministratorAccess",
            at=at,
            event_source="s3.amazonaws.com",
            event_name=name,
            session_start=min(at, NOW - timedelta(minutes=1)),
            error_code=error,
        )
        parsed = parse_record(raw)
        records.append(api_activity(parsed, correlate(parsed, [window], grace=timedelta(hours=1))))
    endpoint, prefix = api.kafka, api.settings.topic_prefix
    duplicated_and_uncovered = [records[0], records[0], *records[1:]]
    await publish_raw(
        endpoint,
        f"{prefix}elevate.audit.v1",
        *(json.dumps(r).encode() for r in duplicated_and_uncovered),
        key=rid.encode(),
    )
    # request-api's activity consumer has handled (and committed) all three: whatever they
    # were going to attach is attached.
    await processed_past(endpoint, f"{prefix}request-api.activity", f"{prefix}elevate.audit.v1")
    async with api.client("alice") as alice:
        activity = (await alice.get(f"/v1/requests/{rid}")).json()["activity"]
    assert [(a["operation"], a["result"], a["outlived"]) for a in activity] == [
        ("ListBuckets", "Success", False),
        ("DeleteBucket", "Failure (AccessDenied)", False),
        ("GetObject", "Success", True),
    ]
    assert activity[0]["severity"] == "informational"

    # The request's page shows the same, the outlived call flagged.
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        cookie, _ = await session_of(api, client, "alice")
        page = await client.get(f"/requests/{rid}", headers={"Cookie": cookie})
    assert page.status_code == 200, page.text
    table = page.text[page.text.index('<table id="activity">') :]
    rows = re.findall(r"<tr class=\"([^\"]*)\">\s*<td>.*?</td>\s*<td>(\w+)", table, re.S)
    assert rows == [
        ("uncovered", "GetBucketAcl"),  # alice's own, in the role, before the grant
        ("", "ListBuckets"),
        (" failed", "DeleteBucket"),
        ("outlived", "GetObject"),
    ]  # mallory's uncovered call is not alice's: not on her request's page
    assert "after the grant ended" in table
    assert "not covered by any grant" in table
    assert "203.0.113.10" in table


async def test_an_approver_sees_what_they_decided_by_user_id_not_by_name(api: Api) -> None:
    """Names are mutable: a decision recorded for someone once called "erin" gives the
    user called erin now nothing; erin's own decision (her user id) lets her see it, even
    outside the approver groups."""
    emit = Emitter(api)
    rid, _ = await submit(api)

    async def erin_sees() -> int:
        async with api.client("erin") as erin:
            return (await erin.get(f"/v1/requests/{rid}")).status_code

    def decided_by(user_id: str) -> DecisionRecorded:
        approver = Person(user_name="erin", user_id=user_id)
        return DecisionRecorded(
            request_id=uuid.UUID(rid),
            approver=approver,
            decision="approve",
            approvals_so_far=1,
            required_approvals=2,
        )

    await emit.send(decided_by("a-former-erin"))
    prefix = api.settings.topic_prefix
    # the read model has folded it: whatever it was going to make visible, it has
    await processed_past(
        api.kafka, f"{prefix}request-api.read-model", f"{prefix}elevate.decisions.v1"
    )
    assert await erin_sees() == 404
    await emit.send(decided_by(api.seeded.user_ids["erin"]))

    async def visible() -> bool:
        return await erin_sees() == 200

    await eventually(visible, timeout=60, what="erin's own decision makes it visible")
