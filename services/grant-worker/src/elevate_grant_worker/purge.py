"""grant-worker's rows the runtime purge may drop (`elevate_core.purge`): grants over for good.

A `gw_grants` row — the grant with its stop — goes only when all of these hold:

- it is ended or failed;
- its window closed more than the margin ago. An approval read again by a replay can then
  never be served (a grant wants its assignment only while `start <= now < end`), so
  dropping the row and its stop cannot re-grant, whatever is still on the broker;
- it ended (failed: was created) longer ago than the dedupe horizon. Its approval and stops
  were read before that, so they are off the broker by now and nothing re-creates the row.

A grant revoked or cancelled before its window closed keeps its row until the window has
closed: till then its stop is what keeps a replayed approval from being served. Unapproved
rows (a stop seen before its approval) are never purged: the approval may still be on its
way — an approval service's outbox waiting out a Kafka outage — and without the row it
would be served.
"""

from __future__ import annotations

from datetime import datetime

from elevate_core.purge import Horizons, delete_batch
from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker.domain import GrantState
from elevate_grant_worker.models import Grant, SessionCut

TABLE = "gw_grants"
CUTS_TABLE = "gw_session_cuts"


async def purge_ended_grants(
    session: AsyncSession, horizons: Horizons, now: datetime, limit: int
) -> int:
    long_ago = now - horizons.dedupe
    over = and_(
        Grant.state.in_((GrantState.ENDED.value, GrantState.FAILED.value)),
        Grant.end_at < now - horizons.margin,
        Grant.created_at < long_ago,
        or_(Grant.ended_at.is_(None), Grant.ended_at < long_ago),
    )
    return await delete_batch(session, Grant, (Grant.grant_id,), over, limit)


async def purge_settled_cuts(
    session: AsyncSession, horizons: Horizons, now: datetime, limit: int
) -> int:
    """Session cuts settled (applied, held, off or refused) longer ago than the dedupe
    horizon: an applied cut's statement lives in the inline policy and expires from
    there; a pending cut is never dropped."""
    settled = and_(SessionCut.state != "pending", SessionCut.updated_at < now - horizons.dedupe)
    return await delete_batch(session, SessionCut, (SessionCut.id,), settled, limit)
