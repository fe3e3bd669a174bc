"""Wake-ups without polling delays.

Writers mark a session (`mark(session, channel)`); after commit, local waiters on that
channel wake at once. On PostgreSQL the same transaction issues NOTIFY, so waiters in
other replicas (LISTENing through `PgListener`) wake too — NOTIFY is only delivered if
the transaction commits, which is exactly when there is something to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from elevate_core.db import Database, on_commit
from elevate_core.retry import DEFAULT_POLICY, Retrying

log = logging.getLogger(__name__)
_INFO_KEY = "elevate_notify"
_waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
_payloads: dict[str, list[set[str]]] = defaultdict(list)  # channel → waiters' payload sets


async def mark(session: AsyncSession, channel: str, payload: str = "") -> None:
    """Wake waiters on `channel` (and on `channel:payload` if given) once this commits."""
    marks: set[tuple[str, str]] = session.info.setdefault(_INFO_KEY, set())
    if (channel, payload) in marks:
        return
    marks.add((channel, payload))
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})


def _wake_after_commit(session: Session) -> None:
    for channel, payload in session.info.get(_INFO_KEY, ()):
        _wake_with_payload(channel, payload)


def _wake_with_payload(channel: str, payload: str) -> None:
    if payload:
        for kept in _payloads.get(channel, ()):
            kept.add(payload)
    wake(channel)
    if payload:
        wake(f"{channel}:{payload}")


on_commit(_wake_after_commit)


def wake(channel: str) -> None:
    for event in list(_waiters.get(channel, ())):
        event.set()


class Waiter:
    """An asyncio.Event registered on channels; `wait(timeout)` returns on a wake-up or
    when the timeout passes (the periodic safety net). With `keep_payloads`, the payloads
    marked on its channels since the last `payloads()` are kept for it: what changed, so
    a waiter can start on that at once (a hint only — it must still look at everything)."""

    def __init__(self, *channels: str, keep_payloads: bool = False) -> None:
        self.event = asyncio.Event()
        self.channels = channels
        self._kept: set[str] | None = set() if keep_payloads else None
        for channel in channels:
            _waiters[channel].add(self.event)
            if self._kept is not None:
                _payloads[channel].append(self._kept)

    def payloads(self) -> set[str]:
        """The payloads marked since the last call (emptied)."""
        if self._kept is None:
            return set()
        taken = set(self._kept)
        self._kept.clear()
        return taken

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.event.clear()

    def close(self) -> None:
        for channel in self.channels:
            _waiters[channel].discard(self.event)
            if self._kept is not None:
                _payloads[channel] = [k for k in _payloads[channel] if k is not self._kept]


class PgListener:
    """LISTENs on PostgreSQL channels and wakes local waiters; reconnects on loss."""

    def __init__(self, db: Database, channels: list[str]) -> None:
        self.db = db
        self.channels = channels
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if not self.db.is_sqlite and self._task is None:
            self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def _run(self) -> None:
        import asyncpg

        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        retrying = Retrying(DEFAULT_POLICY, component="pg-listener", what="LISTEN")
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(dsn)
                for channel in self.channels:
                    await conn.add_listener(
                        channel, lambda _c, _pid, chan, payload: _wake_with_payload(chan, payload)
                    )
                # Something may have been committed while we were not listening.
                for channel in self.channels:
                    wake(channel)
                retrying.succeeded()
                while not conn.is_closed():
                    await asyncio.sleep(5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                decision = retrying.failed_outside_work(exc)
                log.warning("LISTEN connection lost, retrying: %s", decision.reason)
                await DEFAULT_POLICY.wait(decision)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
