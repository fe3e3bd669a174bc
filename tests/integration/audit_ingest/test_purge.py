"""audit-ingest's content digests in the runtime purge, on both backends: a digest goes once
it is older than the dedupe horizon, never before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from elevate_audit_ingest.main import SPEC, build
from elevate_audit_ingest.models import RecordDigest
from elevate_audit_ingest.settings import AuditSettings
from elevate_core.app import ServiceContext
from elevate_core.db import Database
from elevate_core.migrate import upgrade
from elevate_core.purge import Horizons, Purger
from sqlalchemy import select

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HORIZONS = Horizons(margin=DAY, dedupe=31 * DAY)
AGES = {"seen-40d-ago": 40, "seen-32d-ago": 32, "seen-30d-ago": 30, "seen-today": 0}


async def nothing_consumed() -> timedelta | None:
    return timedelta(0)


async def test_digests_go_after_the_dedupe_horizon(database_url: str) -> None:
    settings = AuditSettings(mode="test", database_url=database_url, cloudtrail_queue="")
    ctx = ServiceContext(settings=settings, db=Database(database_url))
    await upgrade(ctx.db, SPEC.migrations)
    build(ctx, settings)  # registers audit-ingest's purge hook
    async with ctx.db.transaction() as session:
        session.add_all(
            RecordDigest(event_id=name, digest="d" * 64, delivery=None, first_seen=NOW - days * DAY)
            for name, days in AGES.items()
        )

    purger = Purger(ctx.db, HORIZONS, broker_stay=nothing_consumed, hooks=ctx.purge_hooks)
    purged = await purger.purge_once(now=NOW)

    assert purged["audit_record_digests"] == 2
    async with ctx.db.sessions() as session:
        left = set((await session.execute(select(RecordDigest.event_id))).scalars())
    await ctx.db.dispose()
    assert left == {"seen-30d-ago", "seen-today"}
