"""audit-ingest's rows the runtime purge may drop (`elevate_core.purge`): content digests.

An `audit_record_digests` row lets a second, different record under one `eventID` be
flagged as a conflict. It goes once it was first seen longer ago than the dedupe horizon
(topic retention + margin): by then the records it could be compared with are off the
broker, and a late copy is still kept (the dedupe key covers the content), only no longer
flagged against a record that old.
"""

from __future__ import annotations

from datetime import datetime

from elevate_core.purge import Horizons, delete_batch
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_audit_ingest.models import RecordDigest

TABLE = "audit_record_digests"


async def purge_old_digests(
    session: AsyncSession, horizons: Horizons, now: datetime, limit: int
) -> int:
    old = RecordDigest.first_seen < now - horizons.dedupe
    keys = (RecordDigest.event_id, RecordDigest.digest)
    return await delete_batch(session, RecordDigest, keys, old, limit)
