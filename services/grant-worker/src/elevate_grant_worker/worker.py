"""The assignment worker: it brings AWS in line with the grants, one triple at a time.

Consumers and timers only change rows (short transactions); this loop makes the AWS calls,
outside any transaction, following the intent protocol of ARCHITECTURE.md §3:

1. record the intent (`creating`/`deleting`) and commit;
2. call AWS (`Create…`/`Delete…AccountAssignment`), then record AWS's request id;
3. poll `Describe…Status` with backoff until it is final;
4. record the outcome and the grant events in one transaction.

After a crash the intent is resumed: with a request id it is polled; without one AWS is
asked whether the assignment exists (so our own half-made write is recognised as ours,
never recorded as someone else's baseline). One replica works at a time (an advisory lock
on PostgreSQL), which also keeps the AWS budget global.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable
from datetime import timedelta

from elevate_core.clock import Clock
from elevate_core.db import Database
from elevate_core.errors import TransientError
from elevate_core.failpoints import failpoint
from elevate_core.leader import LeaderLock
from elevate_core.notify import Waiter, wake
from elevate_core.outbox import Outbox
from elevate_core.retry import Retrying, RetryPolicy
from sqlalchemy import Select, func, select

from elevate_grant_worker import service
from elevate_grant_worker.aws import ACTIVATE, REVOKE, AwsError, IdentityCenter, Triple
from elevate_grant_worker.domain import Action, AssignmentState, GrantState, plan
from elevate_grant_worker.metrics import EXPIRED_NOT_REVOKED, REVOCATION_FAILED, REVOCATION_LAG
from elevate_grant_worker.models import Assignment, Grant
from elevate_grant_worker.settings import GrantWorkerSettings

log = logging.getLogger(__name__)
LEADER_LOCK_KEY = 0x6A570001


class _Retry(TransientError):
    """Try this triple again later (after `delay` seconds when given)."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message, retry_after=delay)


class AssignmentWorker:
    def __init__(
        self,
        db: Database,
        *,
        aws: IdentityCenter,
        outbox: Outbox,
        settings: GrantWorkerSettings,
        clock: Clock,
    ) -> None:
        self.db = db
        self.aws = aws
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self._stopping = asyncio.Event()
        self._tasks: dict[Triple, asyncio.Task[None]] = {}
        self._unsent: set[Triple] = set()  # intents whose AWS write surely was not sent
        self._leader = LeaderLock(db, key=LEADER_LOCK_KEY, name="assignment worker")
        self.retry = RetryPolicy(
            base_delay=settings.retry_base_seconds, max_delay=settings.retry_max_seconds
        )

    # ---- lifecycle ----

    async def run(self) -> None:
        waiter = Waiter(service.WORK_CHANNEL)
        retrying = Retrying(self.retry, component="assignment-worker", what="scanning")
        try:
            while not self._stopping.is_set():
                try:
                    if await self._leader.acquire():
                        await self.scan_once()
                    retrying.succeeded()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    decision = retrying.failed_outside_work(exc)
                    log.warning(
                        "assignment worker: %s; retry %d", decision.reason, retrying.attempt
                    )
                    await self._leader.release()
                    await self.retry.wait(decision, self._stopping)
                    continue
                await waiter.wait(self.settings.worker_poll_seconds)
        finally:
            waiter.close()
            for task in list(self._tasks.values()):
                task.cancel()
            for task in list(self._tasks.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._leader.release()
            self.aws.close()

    async def stop(self) -> None:
        self._stopping.set()
        wake(service.WORK_CHANNEL)

    # ---- scanning ----

    async def scan_once(self) -> int:
        """Start a task for every triple with work; revocations first. Returns how many."""
        now = self.clock.now()
        cols = (Grant.account_id, Grant.permission_set_arn, Grant.principal_id)
        acols = (Assignment.account_id, Assignment.permission_set_arn, Assignment.principal_id)
        async with self.db.sessions() as session:

            async def triples(stmt: Select[str, str, str]) -> list[Triple]:
                return [Triple(a, p, u) for a, p, u in (await session.execute(stmt)).all()]

            todo = [
                *await triples(select(*acols).where(Assignment.state == "deleting")),
                *await triples(select(*cols).where(Grant.state == "revoking").distinct()),
                *await triples(select(*acols).where(Assignment.state == "creating")),
                *await triples(select(*cols).where(Grant.state == "activating").distinct()),
            ]
            overdue = (
                await session.execute(
                    select(func.count())
                    .select_from(Grant)
                    .where(
                        Grant.end_at <= now,
                        Grant.state.in_(
                            [GrantState.ACTIVATING, GrantState.ACTIVE, GrantState.REVOKING]
                        ),
                    )
                )
            ).scalar_one()
        EXPIRED_NOT_REVOKED.set(overdue)
        started = 0
        for triple in todo:
            if triple in self._tasks or len(self._tasks) >= self.settings.worker_concurrency:
                continue
            task = asyncio.create_task(self.drive(triple), name=f"assignment {triple}")
            self._tasks[triple] = task
            task.add_done_callback(functools.partial(self._done, triple))
            started += 1
        return started

    def _done(self, triple: Triple, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(triple, None)
        wake(service.WORK_CHANNEL)  # anything that arrived meanwhile is picked up

    async def drive(self, triple: Triple) -> None:
        """Step the triple until nothing is left to do, backing off on failures.

        A permanent failure (a bug, a refusal no retry can change) ends this task with an
        error log; the next scan starts it again — a delay, never a dropped revocation."""
        retrying = Retrying(self.retry, component="assignment-worker", what=str(triple))
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
                await self.retry.wait(decision, self._stopping)

    # ---- one step ----

    async def step(self, triple: Triple) -> bool:
        """Do the next thing for `triple`; False when there is nothing to do."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            action = plan(ts.view)
            request_id = ts.assignment.request_id
            if action is Action.NONE:
                return False
            if action is Action.SETTLE:
                await service.settle(session, ts, outbox=self.outbox, now=now, removed=False)
                return True
            if action is Action.DELETE:
                service.set_assignment(ts.assignment, AssignmentState.DELETING, now=now)
                self._unsent.add(triple)
        if action is Action.CREATE:
            return await self._begin_create(triple)
        if action in (Action.DELETE, Action.RESUME_DELETE):
            failpoint("grant.after_revoke_intent")
            await self._delete(triple, request_id)
        else:
            await self._create(triple, request_id)
        return True

    async def _begin_create(self, triple: Triple) -> bool:
        """Check for a baseline assignment, then record the creation intent."""
        try:
            exists = await self.aws.exists(triple, priority=ACTIVATE)
        except AwsError as exc:
            raise _Retry(str(exc)) from exc
        now = self.clock.now()
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            if plan(ts.view) is not Action.CREATE:
                return True  # things moved on meanwhile: plan again
            if exists:
                # Present in AWS, held by no grant of ours: access Elevate did not create.
                user = ts.grants[0].snapshot.get("requester", {}) if ts.grants else {}
                await service.record_standing(
                    session,
                    triple,
                    source="baseline",
                    outbox=self.outbox,
                    now=now,
                    user_name=user.get("user_name"),
                    # audit-ingest matches CloudTrail roles by permission set name.
                    permission_set_name=(
                        ts.grants[0].snapshot.get("permission_set_name") if ts.grants else None
                    ),
                )
                log.warning("assignment %s already present in AWS: recorded as standing", triple)
                service.set_assignment(ts.assignment, AssignmentState.PRESENT, now=now)
                await service.settle(session, ts, outbox=self.outbox, now=now, removed=False)
                return True
            service.set_assignment(ts.assignment, AssignmentState.CREATING, now=now)
        self._unsent.add(triple)
        await self._create(triple, None)
        return True

    async def _record_request_id(self, triple: Triple, request_id: str | None) -> None:
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=self.clock.now())
            ts.assignment.request_id = request_id

    async def _create(self, triple: Triple, request_id: str | None) -> None:
        try:
            async with self.aws.gate.slot(ACTIVATE):
                if request_id is None:
                    verify = triple not in self._unsent
                    self._unsent.discard(triple)
                    if verify and await self.aws.exists(triple, priority=ACTIVATE):
                        status, reason = "SUCCEEDED", None  # our own intent, already done
                    else:
                        request_id = await self._send(triple, self.aws.create(triple))
                        failpoint("grant.after_aws_create")
                        await self._record_request_id(triple, request_id)
                if request_id is not None:
                    status, reason = await self._poll(triple, "create", request_id)
        except AwsError as exc:
            if exc.retryable:
                raise _Retry(str(exc)) from exc
            await self._finish_create(
                triple, failed=exc.message or exc.code, code=exc.code, terminal=True
            )
            return
        if status == "SUCCEEDED":
            await self._finish_create(triple, failed=None)
        else:
            await self._finish_create(triple, failed=reason or "creation FAILED", code=None)

    async def _send(self, triple: Triple, call: Awaitable[str | None]) -> str:
        """Await an AWS write; a failure that surely sent nothing keeps the intent unsent."""
        try:
            result = await call
        except AwsError as exc:
            if not exc.ambiguous:
                self._unsent.add(triple)
            raise
        return str(result) if result is not None else ""

    async def _finish_create(
        self,
        triple: Triple,
        *,
        failed: str | None,
        code: str | None = None,
        terminal: bool = False,
    ) -> None:
        now = self.clock.now()
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            row = ts.assignment
            if failed is None:
                service.set_assignment(row, AssignmentState.PRESENT, now=now)
                row.attempts = 0
                row.last_error = None
                await service.settle(session, ts, outbox=self.outbox, now=now, removed=False)
                return
            row.attempts += 1
            row.last_error = failed
            service.set_assignment(row, AssignmentState.ABSENT, now=now)
            if terminal or row.attempts >= self.settings.activation_attempts:
                log.error("assignment %s: activation failed: %s", triple, failed)
                await service.fail_activations(
                    session, ts, outbox=self.outbox, reason=failed, code=code
                )
                row.attempts = 0
                return
        raise _Retry(f"creation FAILED ({failed})")

    async def _delete(self, triple: Triple, request_id: str | None) -> None:
        try:
            async with self.aws.gate.slot(REVOKE):
                status, reason = "SUCCEEDED", None
                if request_id is None:
                    verify = triple not in self._unsent
                    self._unsent.discard(triple)
                    if not verify or await self.aws.exists(triple, priority=REVOKE):
                        sent = await self._send(triple, self.aws.delete(triple))
                        failpoint("grant.mid_revoke")
                        if sent:
                            request_id = sent
                            await self._record_request_id(triple, request_id)
                if request_id is not None:
                    status, reason = await self._poll(triple, "delete", request_id)
        except AwsError as exc:
            await self._revocation_failure(triple, str(exc), still_present=False)
            return
        if status != "SUCCEEDED":
            await self._revocation_failure(triple, reason or "deletion FAILED", still_present=True)
            return
        failpoint("grant.after_aws_delete")
        now = self.clock.now()
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            service.set_assignment(ts.assignment, AssignmentState.ABSENT, now=now)
            ts.assignment.attempts = 0
            ts.assignment.alerted = False
            ts.assignment.last_error = None
            for grant in ts.in_state(GrantState.REVOKING):
                since = grant.stop_requested_at or grant.end_at
                REVOCATION_LAG.observe(max(0.0, (now - since).total_seconds()))
            await service.settle(session, ts, outbox=self.outbox, now=now, removed=True)

    async def _revocation_failure(self, triple: Triple, error: str, *, still_present: bool) -> None:
        now = self.clock.now()
        settings = self.settings
        delay: float | None = None
        async with self.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            row = ts.assignment
            row.attempts += 1
            row.last_error = error[:2000]
            if still_present:  # AWS reported the deletion FAILED: the assignment is there
                service.set_assignment(row, AssignmentState.PRESENT, now=now)
            if row.attempts >= settings.revocation_attempts:
                delay = settings.revocation_retry_seconds * random.uniform(0.8, 1.2)
                if not row.alerted:
                    row.alerted = True
                    REVOCATION_FAILED.inc(len(ts.in_state(GrantState.REVOKING)) or 1)
                    log.error(
                        "revocation of %s failed %d times (%s); retrying every %.0fs",
                        triple,
                        row.attempts,
                        error,
                        settings.revocation_retry_seconds,
                    )
                    await service.alert_revocation(
                        session,
                        ts,
                        outbox=self.outbox,
                        error=error,
                        next_attempt_at=now + timedelta(seconds=delay),
                    )
        raise _Retry(f"revocation failed: {error}", delay=delay)

    async def _poll(self, triple: Triple, kind: str, request_id: str) -> tuple[str, str | None]:
        delay = self.settings.poll_initial_seconds
        for _ in range(self.settings.poll_max_count):
            try:
                status, reason = await self.aws.status(kind, request_id)
            except AwsError as exc:
                if not exc.retryable:
                    # AWS does not know the request (any more): forget the id, so the
                    # intent is resumed by asking whether the assignment exists.
                    await self._record_request_id(triple, None)
                    raise _Retry(f"{kind} status of {request_id}: {exc}") from exc
                status, reason = "IN_PROGRESS", None
            if status in ("SUCCEEDED", "FAILED"):
                return status, reason
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.settings.poll_max_seconds)
        raise _Retry(f"{kind} {request_id} still in progress")
