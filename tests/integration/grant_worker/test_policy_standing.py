"""The policy's standing list is resolved through the directory and recorded, once."""

from __future__ import annotations

from pathlib import Path

from elevate_core.access import AccessControl
from elevate_core.clock import ManualClock
from elevate_core.db import Database
from elevate_core.directory.aws import Directory
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.policy import PolicyWatcher
from elevate_grant_worker.models import Standing
from elevate_grant_worker.standing import PolicyStanding
from elevate_local.moto_seed import SeededOrganisation
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS = ROOT / "services/grant-worker/src/elevate_grant_worker/migrations"


async def test_policy_standing_assignments_are_recorded(
    pg_url: str, moto_endpoint: str, seeded: SeededOrganisation
) -> None:
    db = Database(pg_url)
    await upgrade(db, MIGRATIONS)
    directory = Directory.from_region(region="us-east-1", endpoint_url=moto_endpoint)
    access = AccessControl(PolicyWatcher(ROOT / "deploy/local/policy.yaml"), directory)
    access.load()
    worker = PolicyStanding(
        db, access, outbox=Outbox(source="elevate/grant-worker"), clock=ManualClock()
    )
    try:
        assert await worker.record_once() == 1
        assert await worker.record_once() == 0  # idempotent
    finally:
        await directory.aclose()
    async with db.sessions() as session:
        rows = (await session.execute(select(Standing))).scalars().all()
        events = (await session.execute(select(OutboxMessage))).scalars().all()
    assert [(r.account_id, r.permission_set_arn, r.principal_id, r.source) for r in rows] == [
        (
            seeded.account_ids["log-archive"],
            seeded.permission_set_arns["ReadOnlyAccess"],
            seeded.user_ids["carol"],
            "policy",
        )
    ]
    assert len(events) == 1
    assert b'"permission_set_name":"ReadOnlyAccess"' in events[0].value
    await db.dispose()
