"""Keeps audit-ingest's managed scope equal to what the policy makes requestable.

Activity in an Identity Center role outside that scope (a permission set Elevate never
hands out on that account, e.g. one assigned to a group) is not Elevate's to flag; inside
it, activity that no grant or standing assignment covers is flagged at high severity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from elevate_core.access import AccessControl

from elevate_audit_ingest.service import ManagedScope

log = logging.getLogger(__name__)


class PolicyScope:
    def __init__(
        self, access: AccessControl, scope: ManagedScope, *, refresh_seconds: float = 30.0
    ) -> None:
        self.access = access
        self.scope = scope
        self.refresh_seconds = refresh_seconds
        self._stopping = asyncio.Event()

    async def refresh(self) -> frozenset[tuple[str, str]]:
        pairs = (await self.access.evaluator()).managed_scope()
        if pairs != self.scope.pairs:
            log.info("managed scope: %d (account, permission set) pairs", len(pairs))
        self.scope.pairs = pairs
        return pairs

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # directory away: keep the last scope (or the strict one)
                log.warning("managed scope not refreshed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.refresh_seconds)

    async def stop(self) -> None:
        self._stopping.set()
