"""grant-worker's rows in the runtime purge, on both backends: a grant (with its stop) goes
only when no replay could serve it again and its events are off the broker; every row a
replayed approval would need stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from elevate_core.app import ServiceContext
from elevate_core.db import Database
from elevate_core.migrate import upgrade
from elevate_core.purge import Horizons, Purger
from elevate_grant_worker.main import SPEC, build
from elevate_grant_worker.models import Grant, SessionCut
from elevate_grant_worker.service import grant_id_for
from elevate_grant_worker.settings import GrantWorkerSettings
from sqlalchemy import select

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HORIZONS = Horizons(margin=DAY, dedupe=31 * DAY)

# name: (state, stop, window end, ended, created) — times relative to NOW, in days.
ROWS: dict[str, tuple[str, str | None, float | None, float | None, float]] = {
    # Over for good: window long closed, events long read.
    "expired-40d-ago": ("ended", None, -40, -40, -41),
    "revoked-40d-ago-window-closed": ("ended", "revoked", -35, -40, -41),
    "failed-40d-ago": ("failed", None, -40, None, -41),
    # A replayed approval would be served but for this row's stop: its window is open.
    "revoked-40d-ago-window-open": ("ended", "revoked", +10, -40, -41),
    "cancelled-window-closed-within-margin": ("ended", "cancelled", -0.5, -40, -41),
    # Its approval or stop may still be on the broker.
    "expired-2d-ago": ("ended", None, -2, -2, -3),
    "failed-recently": ("failed", None, -40, None, -20),
    # A stop seen before its approval: the approval may still come.
    "unapproved-100d-ago": ("unapproved", "cancelled", None, None, -100),
    # Live, whatever its times say.
    "active-overdue": ("active", None, -40, None, -41),
}
GONE = {"expired-40d-ago", "revoked-40d-ago-window-closed", "failed-40d-ago"}


def _at(days: float | None) -> datetime | None:
    return None if days is None else NOW + days * DAY


def request_id_of(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def grant_row(name: str) -> Grant:
    state, stop, end, ended, created = ROWS[name]
    request_id = request_id_of(name)
    approved: dict[str, Any] = {}
    if end is not None:
        approved = {
            "account_id": "111111111111",
            "permission_set_arn": "arn:aws:sso:::permissionSet/ssoins-1/ps-1",
            "principal_id": f"u-{name}",
            "start_at": _at(end - 1),
            "end_at": _at(end),
            "snapshot": {"request_id": request_id},
        }
    return Grant(
        grant_id=grant_id_for(request_id),
        request_id=request_id,
        state=state,
        stop_kind=stop,
        stop_at=_at(ended) if stop else None,
        created_at=_at(created),
        ended_at=_at(ended),
        needs_look=False,
        **approved,
    )


async def nothing_consumed() -> timedelta | None:
    return timedelta(0)


async def test_only_grants_no_replay_could_serve_again_are_purged(database_url: str) -> None:
    settings = GrantWorkerSettings(
        mode="test", database_url=database_url, aws_endpoint_url="http://127.0.0.1:1"
    )
    ctx = ServiceContext(settings=settings, db=Database(database_url))
    await upgrade(ctx.db, SPEC.migrations)
    build(ctx, settings)  # registers grant-worker's purge hook
    async with ctx.db.transaction() as session:
        session.add_all(grant_row(name) for name in ROWS)

    purger = Purger(ctx.db, HORIZONS, broker_stay=nothing_consumed, hooks=ctx.purge_hooks)
    purged = await purger.purge_once(now=NOW)

    assert purged["gw_grants"] == len(GONE)
    async with ctx.db.sessions() as session:
        left = set((await session.execute(select(Grant.request_id))).scalars())
    await ctx.db.dispose()
    assert {name for name in ROWS if request_id_of(name) in left} == set(ROWS) - GONE


async def test_settled_session_cuts_go_pending_ones_stay(database_url: str) -> None:
    settings = GrantWorkerSettings(
        mode="test", database_url=database_url, aws_endpoint_url="http://127.0.0.1:1"
    )
    ctx = ServiceContext(settings=settings, db=Database(database_url))
    await upgrade(ctx.db, SPEC.migrations)
    build(ctx, settings)
    cuts = {  # name: (state, last change, days from NOW)
        "applied-40d-ago": ("applied", -40),
        "refused-40d-ago": ("refused", -40),
        "applied-2d-ago": ("applied", -2),
        "pending-40d-ago": ("pending", -40),  # never dropped: it has not been applied
    }
    async with ctx.db.transaction() as session:
        session.add_all(
            SessionCut(
                account_id="111111111111",
                permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
                principal_id=name,
                cut_at=NOW + days * DAY,
                state=state,
                updated_at=NOW + days * DAY,
            )
            for name, (state, days) in cuts.items()
        )
    purger = Purger(ctx.db, HORIZONS, broker_stay=nothing_consumed, hooks=ctx.purge_hooks)
    purged = await purger.purge_once(now=NOW)
    async with ctx.db.sessions() as session:
        left = set((await session.execute(select(SessionCut.principal_id))).scalars())
    await ctx.db.dispose()
    assert purged["gw_session_cuts"] == 2
    assert left == {"applied-2d-ago", "pending-40d-ago"}
