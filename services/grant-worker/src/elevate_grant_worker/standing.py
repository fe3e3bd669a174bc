"""Standing assignments the policy lists: resolved to (account id, permission set ARN,
Identity Store user id) and recorded, so no grant's end ever removes them.

Runs as a worker: it retries while AWS is unreachable and records again after every
policy change (recording is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from elevate_core.access import AccessControl
from elevate_core.clock import Clock
from elevate_core.db import Database
from elevate_core.directory.errors import DirectoryError
from elevate_core.outbox import Outbox
from elevate_core.retry import DEFAULT_POLICY, Retrying

from elevate_grant_worker import service
from elevate_grant_worker.aws import Triple

log = logging.getLogger(__name__)


class PolicyStanding:
    def __init__(
        self,
        db: Database,
        access: AccessControl,
        *,
        outbox: Outbox,
        clock: Clock,
        poll_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.access = access
        self.outbox = outbox
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._stopping = asyncio.Event()
        self.recorded_version: str | None = None

    async def resolve(self) -> dict[Triple, tuple[str, str]]:
        """The policy's standing entries as triples → (user name, permission set name)."""
        evaluator = await self.access.evaluator()
        directory = self.access.directory
        out: dict[Triple, tuple[str, str]] = {}
        for account_id, permission_set, user_ref in evaluator.standing_assignments():
            try:
                arn = (await directory.get_permission_set(permission_set)).arn
                user = await directory.get_user(user_ref)
            except DirectoryError as exc:
                if exc.retryable:
                    raise
                log.error(
                    "policy standing assignment %s/%s/%s cannot be resolved: %s",
                    user_ref,
                    account_id,
                    permission_set,
                    exc,
                )
                continue
            out[Triple(account_id, arn, user.user_id)] = (user.user_name, permission_set)
        return out

    async def record_once(self) -> int:
        """Make the recorded policy standing entries equal the policy's: new ones recorded,
        ones the policy no longer lists dropped (both published). Returns how many are new."""
        wanted = await self.resolve()
        now = self.clock.now()
        new = 0
        async with self.db.transaction() as session:
            for triple, (user_name, permission_set) in wanted.items():
                if await service.record_standing(
                    session,
                    triple,
                    source="policy",
                    outbox=self.outbox,
                    now=now,
                    user_name=user_name,
                    permission_set_name=permission_set,
                ):
                    new += 1
            for triple in await service.standing_of_source(session, "policy"):
                if triple not in wanted:
                    await service.drop_standing(
                        session, triple, reason="policy_removed", outbox=self.outbox
                    )
                    await service.look_at(session, triple, now=now)
                    log.warning("policy no longer lists standing assignment %s", triple)
        self.recorded_version = self.access.policy.version
        return new

    async def run(self) -> None:
        retrying = Retrying(DEFAULT_POLICY, component="policy-standing", what="recording")
        while not self._stopping.is_set():
            wait = self.poll_seconds
            if self.recorded_version != self.access.policy.version:
                try:
                    new = await self.record_once()
                    retrying.succeeded()
                    if new:
                        log.info("recorded %d standing assignment(s) from the policy", new)
                except Exception as exc:  # AWS or the database away: try again soon
                    wait = retrying.failed_outside_work(exc).delay
                    log.warning("policy standing assignments not recorded yet: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    async def stop(self) -> None:
        self._stopping.set()
