"""The assignment worker: it brings AWS in line with what the grants say, one triple at a
time, level-triggered like Kubernetes' TTL controller — derive what should be, compare with
what is recorded, take one step, look again.

It leads through a lease with an epoch (`elevate_core.lease`): only the holder scans and
calls AWS; the epoch is checked right before every AWS request (botocore's `before-send`)
and inside every write's transaction, so a worker that lost the lease — its database
session dropped, the lease taken over — can neither call AWS nor write. Losing the lease
cancels every task at once.

Which triples to look at: those a consumer asked about (`needs_look`), those whose
`next_check_at` has come (a start or an end), those with an intent, and — every
`reconcile_interval_seconds` — every triple with a live grant, an intent or a recorded
assignment, so that no lost event or missed timer can leave access in place. Revocation
work goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from elevate_core.clock import Clock
from elevate_core.db import Database
from elevate_core.lease import Lease
from elevate_core.notify import Waiter, wake
from elevate_core.outbox import Outbox
from elevate_core.progress import TopicProgress
from elevate_core.retry import Retrying, RetryPolicy
from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import recheck, service
from elevate_grant_worker.aws import IdentityCenter, Triple
from elevate_grant_worker.cuts import Durations, OptedIn, SessionCutter
from elevate_grant_worker.domain import AssignmentState, GrantState, Plan, Step, gated, plan
from elevate_grant_worker.metrics import EXPIRED_NOT_REVOKED
from elevate_grant_worker.models import Assignment, Grant
from elevate_grant_worker.recheck import GrantRecheck
from elevate_grant_worker.sessions import LONGEST_SESSION
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_grant_worker.steps import AwsSteps
from elevate_grant_worker.sweep import ScopeProvider, Sweeper

log = logging.getLogger(__name__)
LEASE_NAME = "grant-worker.assignments"
_GRANT_COLS = (Grant.account_id, Grant.permission_set_arn, Grant.principal_id)
_TRIPLE_COLS = (Assignment.account_id, Assignment.permission_set_arn, Assignment.principal_id)


@dataclass
class _Backoff:
    due: float  # time.monotonic()
    retrying: Retrying


class AssignmentWorker:
    def __init__(
        self,
        db: Database,
        *,
        aws: IdentityCenter,
        outbox: Outbox,
        settings: GrantWorkerSettings,
        clock: Clock,
        progress: TopicProgress | None = None,
        history: TopicProgress | None = None,
        user_names: Callable[[str], Awaitable[str | None]] | None = None,
        scope: ScopeProvider | None = None,
        recheck: GrantRecheck | None = None,
        cut_sessions: OptedIn | None = None,
        session_durations: Durations | None = None,
    ) -> None:
        self.db = db
        self.aws = aws
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.progress = progress
        self.history = history
        self.user_names = user_names
        # None (tests of other behaviour only): every approval is served as it says.
        self.recheck = recheck
        self._stopping = asyncio.Event()
        self._tasks: dict[Triple, asyncio.Task[None]] = {}
        self.lease = Lease(db, LEASE_NAME, ttl=settings.leader_lease_seconds, on_lost=self._lost)
        aws.fence = functools.partial(self.lease.ensure_usable, settings.aws_request_bound)
        self.retry = RetryPolicy(
            base_delay=settings.retry_base_seconds, max_delay=settings.retry_max_seconds
        )
        self.steps = AwsSteps(self)
        self.cutter = SessionCutter(self, opted_in=cut_sessions, durations=session_durations)
        self._cut_task: asyncio.Task[None] | None = None
        self.sweeper = Sweeper(self, scope=scope)
        self._last_full_pass = 0.0
        # Triples that failed, waiting out their backoff outside the task cap.
        self._backoff: dict[Triple, _Backoff] = {}
        self._next_check: datetime | None = None
        self._backlog: list[Triple] = []
        self._last_scan = 0.0

    # ---- lifecycle and leadership ----

    async def run(self) -> None:
        waiter = Waiter(service.WORK_CHANNEL)
        keeper = asyncio.create_task(self._keep_lease(), name="assignment-lease")
        starter = asyncio.create_task(self._start_named_ones(), name="assignment-starter")
        retrying = Retrying(self.retry, component="assignment-worker", what="scanning")
        try:
            while not self._stopping.is_set():
                try:
                    if self.lease.held or await self.lease.acquire():
                        await self.scan_once()
                    retrying.succeeded()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    decision = retrying.failed_outside_work(exc)
                    log.warning(
                        "assignment worker: %s; retry %d", decision.reason, retrying.attempt
                    )
                    await self.retry.wait(decision, self._stopping)
                    continue
                await waiter.wait(self._idle_wait())
                if self._backlog:  # under load: scan at most every 50 ms, tasks feed on
                    await asyncio.sleep(max(0.0, self._last_scan + 0.05 - time.monotonic()))
        finally:
            waiter.close()
            for helper in (keeper, starter):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            await self._cancel_tasks()
            await self.sweeper.stop()
            await self.lease.release()
            for progress in (self.progress, self.history):
                if progress is not None:
                    await progress.close()
            self.aws.close()

    def _idle_wait(self) -> float:
        if not self.lease.held:
            return self.lease.renew_every
        wait = self.settings.worker_poll_seconds
        if self._next_check is not None:  # the next start or end: look then, not later
            until = self._next_check
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
            wait = max(0.001, min(wait, (until - self.clock.now()).total_seconds()))
        dues = [b.due for b in self._backoff.values()]
        if (cut_due := self.cutter.retry_due()) is not None:
            dues.append(cut_due)
        if dues:
            wait = max(0.01, min(wait, min(dues) - time.monotonic()))
        return wait

    async def _keep_lease(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.lease.renew_every)
            if self.lease.epoch is not None:
                await self.lease.renew()  # a failure loses the lease and cancels our tasks

    def _lost(self) -> None:
        """The lease is gone: stop every task now (none may outlive leadership)."""
        for task in list(self._tasks.values()):
            task.cancel()
        if self._cut_task is not None:
            self._cut_task.cancel()
        self.sweeper.cancel()
        wake(service.WORK_CHANNEL)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks.values())
        if self._cut_task is not None:
            tasks.append(self._cut_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        self._stopping.set()
        wake(service.WORK_CHANNEL)

    # ---- scanning ----

    async def due_triples(self, *, now: datetime, everything: bool) -> list[Triple]:
        """Triples to look at, revocation work first."""
        live = Grant.state.in_(service.LIVE)
        async with self.db.sessions() as session:

            async def triples(stmt: Select[Any, Any, Any]) -> list[Triple]:
                rows = (await session.execute(stmt)).all()
                return [Triple(str(a), str(p), str(u)) for a, p, u in rows]

            grants = select(*_GRANT_COLS).distinct()
            todo = [
                *await triples(select(*_TRIPLE_COLS).where(Assignment.state == "deleting")),
                *await triples(
                    grants.where(live, or_(Grant.stop_kind.is_not(None), Grant.end_at <= now))
                ),
                *await triples(select(*_TRIPLE_COLS).where(Assignment.state == "creating")),
                *await triples(grants.where(live, Grant.needs_look)),
                *await triples(select(*_TRIPLE_COLS).where(Assignment.next_check_at <= now)),
            ]
            if everything:
                todo += await triples(grants.where(live))
                todo += await triples(select(*_TRIPLE_COLS).where(Assignment.state != "absent"))
            self._next_check = (
                await session.execute(
                    select(func.min(Assignment.next_check_at)).where(Assignment.next_check_at > now)
                )
            ).scalar_one_or_none()
            overdue = (
                await session.execute(
                    select(func.count())
                    .select_from(Grant)
                    .where(
                        Grant.state == GrantState.ACTIVE.value,
                        or_(Grant.end_at <= now, Grant.stop_kind.is_not(None)),
                    )
                )
            ).scalar_one()
        EXPIRED_NOT_REVOKED.set(overdue)
        return list(dict.fromkeys(todo))  # first mention keeps its priority

    async def scan_once(self) -> int:
        """Start a task for every triple with work; returns how many were started."""
        since = time.monotonic() - self._last_full_pass
        everything = since >= self.settings.reconcile_interval_seconds
        if everything:
            self._last_full_pass = time.monotonic()
        self.sweeper.maybe_start()
        self._maybe_cut()
        self._last_scan = time.monotonic()
        due = await self.due_triples(now=self.clock.now(), everything=everything)
        clock = time.monotonic()
        # What the task cap leaves waiting is started as tasks finish, in priority order,
        # without another scan; a failing triple waits out its backoff outside the cap.
        self._backlog = [
            t
            for t in dict.fromkeys([*due, *self._backoff])
            if t not in self._tasks and (t not in self._backoff or self._backoff[t].due <= clock)
        ]
        return self._fill()

    async def _start_named_ones(self) -> None:
        """Beside the scan loop, so that a commit naming a triple never waits for a scan
        in progress either."""
        waiter = Waiter(service.WORK_CHANNEL, keep_payloads=True)
        try:
            while not self._stopping.is_set():
                await waiter.wait(self.lease.renew_every)
                self._start_named(waiter.payloads())
        finally:
            waiter.close()

    def _start_named(self, keys: set[str]) -> None:
        """Start the triples a commit named (a decision, a stop) before a scan finds
        them: their first step does not wait for one. Only a head start — the scans still
        look at everything, and a step reads the triple's state afresh."""
        named = [t for t in map(Triple.from_key, sorted(keys)) if t is not None]
        if not named or not self.lease.held or self._backlog:
            return  # under load the scan's order (revocations first) decides, not arrival
        clock = time.monotonic()
        ready = [
            t
            for t in named
            if t not in self._tasks and (t not in self._backoff or self._backoff[t].due <= clock)
        ]
        self._backlog = ready[: max(0, self.settings.worker_concurrency - len(self._tasks))]
        self._fill()

    def _maybe_cut(self) -> None:
        """Session cuts run beside the triples, one pass at a time (their failures are
        retried by the next scan: a delay, never a dropped cut)."""
        if self._cut_task is not None and not self._cut_task.done():
            return
        self._cut_task = asyncio.create_task(self._cut_pass(), name="session-cuts")

    async def _cut_pass(self) -> None:
        try:
            if await self.cutter.run_once():
                wake(service.WORK_CHANNEL)  # look again soon: more may be due
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("session cuts: %r; retried at the next scan", exc)
            await asyncio.sleep(self.settings.retry_base_seconds)

    def _fill(self) -> int:
        started = 0
        while self._backlog and len(self._tasks) < self.settings.worker_concurrency:
            if not self.lease.held or self._stopping.is_set():
                break
            triple = self._backlog.pop(0)
            if triple in self._tasks:
                continue
            task = asyncio.create_task(self.drive(triple), name=f"assignment {triple}")
            self._tasks[triple] = task
            task.add_done_callback(functools.partial(self._done, triple))
            started += 1
        return started

    def _done(self, triple: Triple, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(triple, None)
        if self._backlog:
            self._fill()
        else:
            wake(service.WORK_CHANNEL)  # anything that arrived meanwhile is picked up

    async def drive(self, triple: Triple) -> None:
        """Step the triple until it waits, backing off on failures.

        A permanent failure (a bug, a refusal no retry can change) or a lost lease ends this
        task with a log line; the next scan starts it again — a delay, never a dropped
        revocation."""
        backoff = self._backoff.pop(triple, None)
        retrying = (
            backoff.retrying
            if backoff is not None
            else Retrying(self.retry, component="assignment-worker", what=str(triple))
        )
        while not self._stopping.is_set():
            try:
                if not await self.step(triple):
                    return
                retrying.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                decision = retrying.failed(exc)
                if not decision.retry:
                    log.error("assignment %s: %s; left to the next scan", triple, decision.reason)
                    return
                log.info(
                    "assignment %s: %s; retry in %.2fs", triple, decision.reason, decision.delay
                )
                # Wait it out without holding a task: the scan starts it again when due.
                self._backoff[triple] = _Backoff(time.monotonic() + decision.delay, retrying)
                return

    # ---- one step ----

    async def _progress(self, ts: service.TripleState) -> dict[str, int]:
        if self.progress is None:
            return {}
        return await self.progress.progress_for(ts.gates())

    async def advance(
        self,
        session: AsyncSession,
        ts: service.TripleState,
        *,
        now: datetime,
        sessions_cut: bool = False,
        session_duration: timedelta = LONGEST_SESSION,
    ) -> Plan:
        """Inside a transaction: settle what can be settled without AWS (activations,
        endings, drift reports) and, when the triple only has to wait, record when to look
        again. Returns the step that is left: an AWS step, or WAIT."""
        progress = await self._progress(ts) if ts.gated else {}
        while True:
            facts = ts.facts(
                progress, removal=self.settings.drift_removal, recheck=self.recheck is not None
            )
            p = plan(facts, now)
            if p.step is not Step.SETTLE:
                break
            await service.settle(
                session,
                ts,
                p,
                outbox=self.outbox,
                now=now,
                sessions_cut=sessions_cut,
                session_duration=session_duration,
            )
        if p.step is Step.WAIT:
            service.looked_at(ts, next_check_at=p.look_again_at, keep=gated(facts, now))
            if p.report_drift:
                ts.assignment.drift_reported = True
                await service.report_drift(
                    session,
                    service.triple_of_row(ts.assignment),
                    kind="unexpected_assignment",
                    action="reported",
                    outbox=self.outbox,
                )
        return p

    async def step(self, triple: Triple) -> bool:
        """Do the next thing for `triple`; False when it only has to wait.

        A grant that would be served now is re-checked first — after revocations and
        interrupted writes, which never wait for it."""
        now = self.clock.now()
        unchecked: list[recheck.Pending] = []
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            p = await self.advance(session, ts, now=now)
            request_id = ts.assignment.request_id
            if self.recheck is not None and p.step in (Step.WAIT, Step.CREATE):
                unchecked = recheck.pending(ts, now)
            if p.step is Step.DELETE:
                service.set_assignment(ts.assignment, AssignmentState.DELETING, now=now)
                self.steps.unsent.add(triple)
            ts.assignment.epoch = await self.lease.check(session)
        if unchecked:
            return await recheck.recheck_grants(self, triple, unchecked)
        if p.step is Step.WAIT:
            return False
        if p.step is Step.CREATE:
            return await self.steps.begin_create(triple)
        if p.step in (Step.DELETE, Step.RESUME_DELETE):
            return await self.steps.delete(triple, request_id)
        return await self.steps.create(triple, request_id)
