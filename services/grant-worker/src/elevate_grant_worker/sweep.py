"""The reconciler sweep: what AWS really holds in managed scope, compared with the record.

Managed scope is the (account, permission set) pairs the policy makes requestable, plus
every pair Elevate already manages. Once at start (when it first leads) and every
`ELEVATE_SWEEP_INTERVAL_SECONDS`, at the lowest priority of the AWS budget, the sweep:

1. asks, per managed permission set, which accounts it is provisioned to
   (`ListAccountsForProvisionedPermissionSet`, paginated) — only there can it have
   assignments, so no call is spent on the others;
2. lists the user assignments of each remaining pair (`ListAccountAssignments`, paginated);
3. records what it saw, per triple, only where nothing changed the triple's row meanwhile
   (its write counter) and no write of ours is in progress (an intent is never drift):
   - a pair seen for the first time comes under management: what AWS holds is baseline;
   - present though nothing of ours made it and no grant wants it: not Elevate's (`found`);
     a standing entry keeps it, otherwise it is drift, which the worker reports once
     (`DriftDetected … reported`) or, with `ELEVATE_DRIFT_REMOVAL`, removes;
   - present and wanted by a grant: adopted;
   - gone though recorded present: recorded absent; a baseline entry is dropped (a later
     re-add is drift); if a grant still needs it, the worker recreates it and reports it
     (`missing`, `restored`).

Group assignments are never looked at (only `PrincipalType == USER`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from elevate_core.notify import wake
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service
from elevate_grant_worker.aws import RECONCILE, Triple
from elevate_grant_worker.domain import AssignmentState, GrantState
from elevate_grant_worker.metrics import SWEEPS
from elevate_grant_worker.models import Assignment, ManagedPair

if TYPE_CHECKING:
    from elevate_grant_worker.worker import AssignmentWorker

log = logging.getLogger(__name__)
Pair = tuple[str, str]  # (account id, permission set ARN)
ScopeProvider = Callable[[], Awaitable[set[Pair]]]
_CHUNK = 100  # accounts looked up in the database at a time
_YIELD_AT_MOST = 1.0  # seconds a sweep call waits for revocations in progress


@dataclass
class SweepReport:
    pairs: int = 0
    provisioned: int = 0
    calls: int = 0
    found: int = 0
    missing: int = 0


class Sweeper:
    def __init__(self, worker: AssignmentWorker, *, scope: ScopeProvider | None) -> None:
        self.w = worker
        self.scope = scope
        self._task: asyncio.Task[SweepReport] | None = None
        self._last = float("-inf")
        self.last_report: SweepReport | None = None

    def maybe_start(self) -> None:
        """Start a sweep in the background when one is due (once at start, then every
        interval); the scan goes on meanwhile, and the sweep's calls wait behind others."""
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() - self._last < self.w.settings.sweep_interval_seconds:
            return
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="reconciler sweep")

    async def _run(self) -> SweepReport:
        try:
            report = await self.sweep_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # AWS, the policy or the database away: next interval
            log.warning("reconciler sweep failed: %r; next in %.0fs", exc, self.interval)
            self._last = time.monotonic() - self.interval + min(60.0, self.interval)
            raise
        return report

    @property
    def interval(self) -> float:
        return self.w.settings.sweep_interval_seconds

    async def idle(self) -> None:
        """Wait for a sweep in progress to finish (whatever its outcome)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def cancel(self) -> None:
        """Leadership lost: a sweep must not go on (its writes would be refused anyway)."""
        if self._task is not None:
            self._task.cancel()
        self._last = float("-inf")  # the next leadership sweeps at once

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def managed_scope(self) -> set[Pair]:
        pairs: set[Pair] = set(await self.scope()) if self.scope is not None else set()
        async with self.w.db.sessions() as session:
            pairs.update(
                (a, p)
                for a, p in (
                    await session.execute(
                        select(ManagedPair.account_id, ManagedPair.permission_set_arn)
                    )
                ).all()
            )
        return pairs

    async def sweep_once(self) -> SweepReport:
        report = SweepReport()
        pairs = await self.managed_scope()
        report.pairs = len(pairs)
        by_permission_set: dict[str, set[str]] = {}
        for account_id, ps_arn in pairs:
            by_permission_set.setdefault(ps_arn, set()).add(account_id)
        aws = self.w.aws
        calls_before = aws.calls_by_lane.get(RECONCILE, 0)
        for ps_arn, accounts in sorted(by_permission_set.items()):
            provisioned = await aws.provisioned_accounts(ps_arn, priority=RECONCILE)
            ordered = sorted(accounts)
            # In chunks: no query large enough to hold the event loop (and a revocation).
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start : start + _CHUNK]
                managed, recorded = await self._known(ps_arn, chunk)
                unlisted: list[str] = []
                for account_id in chunk:
                    pair = Triple(account_id, ps_arn, "")
                    present: set[str] = set()
                    if account_id in provisioned:
                        report.provisioned += 1
                        await self._after_revocations()
                        present = await aws.user_assignments(account_id, ps_arn, priority=RECONCILE)
                    if account_id not in managed:
                        if present:
                            await self.w.steps.manage(pair, present)  # baseline, with names
                        else:
                            unlisted.append(account_id)
                        continue
                    found, missing = await self.observe(pair, present, recorded.get(account_id, {}))
                    report.found += found
                    report.missing += missing
                await self._manage_empty(ps_arn, unlisted)
        report.calls = aws.calls_by_lane.get(RECONCILE, 0) - calls_before
        SWEEPS.inc()
        self.last_report = report
        log.info(
            "sweep: %d pair(s), %d provisioned, %d call(s), %d found, %d missing",
            report.pairs,
            report.provisioned,
            report.calls,
            report.found,
            report.missing,
        )
        wake(service.WORK_CHANNEL)
        return report

    async def _after_revocations(self) -> None:
        """Revocations first: while one is talking to AWS, the sweep waits (a little: it
        must not starve under a long wave either)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.w.steps.no_revocations.wait(), _YIELD_AT_MOST)

    async def _known(
        self, ps_arn: str, accounts: list[str]
    ) -> tuple[set[str], dict[str, dict[str, tuple[int, str]]]]:
        """For these accounts of the permission set: which pairs are managed, and what is
        recorded of each triple (principal → (write count, state))."""
        async with self.w.db.sessions() as session:
            managed = set(
                (
                    await session.execute(
                        select(ManagedPair.account_id).where(
                            ManagedPair.permission_set_arn == ps_arn,
                            ManagedPair.account_id.in_(accounts),
                        )
                    )
                ).scalars()
            )
            rows = (
                await session.execute(
                    select(
                        Assignment.account_id,
                        Assignment.principal_id,
                        Assignment.version,
                        Assignment.state,
                    ).where(
                        Assignment.permission_set_arn == ps_arn,
                        Assignment.account_id.in_(accounts),
                    )
                )
            ).all()
        recorded: dict[str, dict[str, tuple[int, str]]] = {}
        for account_id, principal_id, version, state in rows:
            recorded.setdefault(account_id, {})[principal_id] = (version, state)
        return managed, recorded

    async def _manage_empty(self, ps_arn: str, accounts: list[str]) -> None:
        """Pairs seen for the first time with no user assignment: under management now,
        with an empty baseline (so what appears later is drift)."""
        if not accounts:
            return
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            for account_id in accounts:
                await service.manage(session, account_id, ps_arn, now=now)
            await self.w.lease.check(session)

    async def observe(
        self, pair: Triple, present: set[str], before: dict[str, tuple[int, str]]
    ) -> tuple[int, int]:
        """Record where one managed pair's listing differs from the record (a transaction
        only for those: a sweep of an unchanged organisation writes nothing); returns
        (drift found, assignments gone)."""
        found = missing = 0
        for principal_id in sorted(present | set(before)):
            in_aws = principal_id in present
            state = before[principal_id][1] if principal_id in before else "absent"
            if in_aws == (state == "present") or state in ("creating", "deleting"):
                continue  # agrees with the record, or our own write is in progress
            outcome = await self._observe_triple(
                Triple(pair.account_id, pair.permission_set_arn, principal_id),
                in_aws=in_aws,
                before=before.get(principal_id),
            )
            found += outcome == "found"
            missing += outcome == "gone"
        return found, missing

    async def _observe_triple(
        self, triple: Triple, *, in_aws: bool, before: tuple[int, str] | None
    ) -> str | None:
        now = self.w.clock.now()
        key = (triple.account_id, triple.permission_set_arn, triple.principal_id)
        async with self.w.db.transaction() as session:
            existed = await session.get(Assignment, key) is not None
            if existed != (before is not None):
                return None  # created meanwhile: the next sweep looks again
            ts = await service.load(session, triple, now=now)
            row = ts.assignment
            if before is not None and row.version != before[0]:
                return None  # written meanwhile: what we listed may be stale
            if row.state in (AssignmentState.CREATING.value, AssignmentState.DELETING.value):
                return None  # our own write in progress is never drift
            outcome = await self._apply(session, ts, in_aws=in_aws, now=now)
            if outcome is not None:
                row.next_check_at = now
                row.epoch = await self.w.lease.check(session)
        return outcome

    async def _apply(
        self, session: AsyncSession, ts: service.TripleState, *, in_aws: bool, now: datetime
    ) -> str | None:
        row = ts.assignment
        triple = service.triple_of_row(row)
        if in_aws and row.state == AssignmentState.ABSENT.value:
            row.state = AssignmentState.PRESENT.value
            if any(g.wants(now) for g in ts.facts({}).grants):
                return "adopted"  # there for a grant of ours: served
            row.found = True  # not Elevate's: standing keeps it, otherwise it is drift
            return "adopted" if ts.standing else "found"
        if not in_aws and row.state == AssignmentState.PRESENT.value:
            row.state = AssignmentState.ABSENT.value
            row.found = False
            await service.drop_standing(
                session,
                triple,
                reason="assignment_gone",
                outbox=self.w.outbox,
                source="baseline",
            )
            row.missing = any(g.state == GrantState.ACTIVE.value for g in ts.grants)
            return "gone"
        return None
