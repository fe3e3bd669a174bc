"""One active instance per database for work that must not run twice at once (the
outbox relay keeps per-key order; the assignment worker serialises AWS writes).

PostgreSQL: a session advisory lock held on a dedicated connection; if the holder dies,
its connection closes and another replica takes over. SQLite is single-replica by
contract, so its one process always leads.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from elevate_core.db import Database

log = logging.getLogger(__name__)


class LeaderLock:
    def __init__(self, db: Database, *, key: int, name: str) -> None:
        self.db = db
        self.key = key
        self.name = name
        self._conn: AsyncConnection | None = None

    async def acquire(self) -> bool:
        """True while this instance leads (cheap once held)."""
        if self.db.is_sqlite:
            return True
        if self._conn is not None and not self._conn.closed:
            return True
        conn = await self.db.engine.connect()
        got = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
        if got.scalar():
            await conn.commit()
            self._conn = conn
            log.info("%s is the leader", self.name)
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
