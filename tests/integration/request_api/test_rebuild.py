"""The read model tolerates order: events that arrive before their request are kept and
applied once it arrives (never dead-lettered for that), and a rebuild from the earliest
offset into an empty database equals the live model, row by row."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from elevate_core.db import Database
from elevate_core.events.envelope import encode, new_envelope
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassUsed,
    DecisionRecorded,
    Person,
    RequestRejected,
    RequestSubmitted,
)
from elevate_local.postgres import PostgresCluster
from elevate_request_api.models import AccessRequest, RequestEvent, TimelineEntry
from sqlalchemy import select

from tests.harness import signed
from tests.helpers import eventually, headers_of, read_to_end
from tests.integration.request_api.conftest import Api
from tests.integration.request_api.test_read_model import Emitter, reaches, submit


async def _publish_as(api: Api, source: str, *events: Any) -> None:
    producer = api.kafka.producer()
    await producer.start()
    try:
        for event in events:
            rid = str(getattr(event, "request_id", None) or event.snapshot.request_id)
            value, headers = encode(new_envelope(event, source=source, subject=rid))
            topic = f"{api.settings.topic_prefix}{event.topic}"
            headers = signed(topic, value, headers)  # as the topic's writer signs it
            await producer.send_and_wait(topic, value, key=rid.encode(), headers=headers)
    finally:
        await producer.stop()


def _submitted(api: Api, rid: uuid.UUID) -> RequestSubmitted:
    start = datetime.now(UTC)
    return RequestSubmitted(
        request_id=rid,
        requester=Person(user_name="alice", user_id=api.seeded.user_ids["alice"]),
        account_id=api.seeded.account_ids["payments-prod"],
        account_name="payments-prod",
        permission_set_name="AdministratorAccess",
        permission_set_arn=api.seeded.permission_set_arns["AdministratorAccess"],
        start=start,
        end=start + timedelta(hours=1),
        justification="OPS-9 failover",
        ticket="OPS-9",
        matched_rule="sre-prod-admin",
        policy_version="v-test",
        approval_rule="one-sre-lead",
        approver_groups=("sre-leads",),
        required_approvals=1,
    )


async def test_events_before_their_request_are_applied_once_it_arrives(api: Api) -> None:
    rid = uuid.uuid4()
    bob = Person(user_name="bob", user_id=api.seeded.user_ids["bob"])
    # approval's outcome reaches us before request-api's own submission (a rebuild, or a
    # slow partition): decisions topic first.
    await _publish_as(
        api,
        "elevate/approval",
        ApprovalRequested(request_id=rid, approver_groups=("sre-leads",), required_approvals=1),
        DecisionRecorded(
            request_id=rid,
            approver=bob,
            decision="reject",
            comment="not during the freeze",
            approvals_so_far=0,
            required_approvals=1,
        ),
        RequestRejected(request_id=rid, rejected_by=bob, comment="not during the freeze"),
    )

    async def kept() -> bool:
        async with Database(api.settings.database_url).sessions() as session:
            rows = (
                await session.execute(select(RequestEvent).where(RequestEvent.request_id == rid))
            ).all()
        return len(rows) == 3

    await eventually(kept, what="the early events kept")  # (stored, not dead-lettered)
    await _publish_as(api, "elevate/request-api", _submitted(api, rid))
    await reaches(api, str(rid), "rejected")
    async with api.client("alice") as alice:
        detail = (await alice.get(f"/v1/requests/{rid}")).json()
    assert [t["action"] for t in detail["timeline"]] == [
        "submitted",
        "approval_requested",
        "decision_recorded",
        "rejected",
    ]
    assert detail["timeline"][-1]["comment"] == "not during the freeze"
    assert detail["approver_groups"] == ["sre-leads"]
    dlq = await read_to_end(api.kafka, f"{api.settings.topic_prefix}elevate.dlq.v1")
    assert not [r for r in dlq if headers_of(r).get("ce_subject") == str(rid)]


async def _snapshot(url: str) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    db = Database(url)
    try:
        async with db.sessions() as session:
            requests = [
                {c.name: getattr(r, c.key) for c in AccessRequest.__table__.columns}
                for r in (
                    await session.execute(select(AccessRequest).order_by(AccessRequest.id))
                ).scalars()
            ]
            timeline = [
                (t.request_id, t.event_id, t.at, t.actor, t.action, t.comment, t.status)
                for t in (
                    await session.execute(
                        select(TimelineEntry).order_by(TimelineEntry.request_id, TimelineEntry.id)
                    )
                ).scalars()
            ]
        return requests, timeline
    finally:
        await db.dispose()


async def test_a_rebuild_equals_the_live_model_row_by_row(
    api: Api, start_api: Callable[..., Any], postgres: PostgresCluster
) -> None:
    emit = Emitter(api)
    approved, snap = await submit(api)
    rejected, _ = await submit(api)
    cancelled, _ = await submit(api)
    grace = Person(user_name="grace", user_id=api.seeded.user_ids["grace"])
    gid = uuid.uuid4()
    from elevate_core.events.models import GrantActivated, GrantEnded, RequestApproved

    await emit.send(
        RequestApproved(snapshot=snap),
        GrantActivated(grant_id=gid, snapshot=snap, activated_at=snap.start),
        BreakGlassUsed(
            request_id=snap.request_id,
            requester=snap.requester,
            account_id=snap.account_id,
            permission_set_name=snap.permission_set_name,
            start=snap.start,
            end=snap.end,
            justification=snap.justification,
            matched_rule="sre-break-glass",
            policy_version=snap.policy_version,
        ),
        RequestRejected(request_id=uuid.UUID(rejected), rejected_by=grace, comment="no"),
    )
    await reaches(api, approved, "active")  # (a revoke needs access to revoke)
    async with api.client("alice") as alice:
        assert (await alice.post(f"/v1/requests/{cancelled}/cancel")).status_code == 202
        revoke = await alice.post(f"/v1/requests/{approved}/revoke", json={"comment": "done"})
        assert revoke.status_code == 202, revoke.text
    await emit.send(
        GrantEnded(
            grant_id=gid,
            snapshot=snap,
            reason="revoked",
            ended_at=snap.end,
            assignment_removed=True,
        )
    )
    await reaches(api, approved, "revoked")
    await reaches(api, rejected, "rejected")
    await reaches(api, cancelled, "cancelled")
    live = await _snapshot(api.settings.database_url)
    assert {r["id"] for r in live[0]} >= {uuid.UUID(x) for x in (approved, rejected, cancelled)}

    rebuilt_url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    await start_api(rebuilt_url, consumer_group_suffix="-rebuild")

    async def same() -> bool:
        return await _snapshot(rebuilt_url) == live

    await eventually(same, timeout=90, what="the rebuilt read model equal to the live one")
    rows, timeline = await _snapshot(rebuilt_url)
    assert [r["status"] for r in rows if r["id"] == uuid.UUID(approved)] == ["revoked"]
    assert [r["review"] for r in rows if r["id"] == uuid.UUID(approved)] == ["pending"]
    assert len(timeline) == len(live[1]) == 10
