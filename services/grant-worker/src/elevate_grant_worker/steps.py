"""The AWS half of a reconcile step, following the intent protocol of ARCHITECTURE.md §3:

1. record the intent (`creating`/`deleting`) and commit;
2. call AWS (`Create…`/`Delete…AccountAssignment`), then record AWS's request id —
   for a create, only if its first status poll does not already find it final;
3. poll `Describe…Status` with backoff until it is final;
4. record what AWS now holds — and nothing more: the next step re-plans from that, so a
   create that finished after its grant was revoked is followed by a delete, and grant
   events (activated, ended) come only from `settle`.

After a crash an intent with a request id is polled; one without is resolved by asking AWS
whether the assignment exists, so our own half-made write is finished, never mistaken for
somebody else's. Every write here checks the lease inside its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from datetime import timedelta
from typing import TYPE_CHECKING

from elevate_core.errors import TransientError
from elevate_core.failpoints import failpoint
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service
from elevate_grant_worker.aws import ACTIVATE, REVOKE, AwsError, IdentityCenter, Triple
from elevate_grant_worker.domain import AssignmentState, GrantState, Step
from elevate_grant_worker.metrics import REVOCATION_FAILED, REVOCATION_LAG

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from elevate_grant_worker.worker import AssignmentWorker


class Retry(TransientError):
    """Try this triple again later (after `delay` seconds when given)."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message, retry_after=delay)


class AwsSteps:
    def __init__(self, worker: AssignmentWorker) -> None:
        self.w = worker
        self.unsent: set[Triple] = set()  # intents whose AWS write surely was not sent
        self.history_read = False
        self.revoking = 0  # revocations talking to AWS now (a sweep steps aside for them)
        self.no_revocations = asyncio.Event()
        self.no_revocations.set()

    @property
    def aws(self) -> IdentityCenter:
        return self.w.aws

    async def _record(
        self, triple: Triple, state: AssignmentState | None, **fields: object
    ) -> None:
        """One write of the triple row (the outcome of a call), under the lease."""
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            if state is not None:
                service.set_assignment(ts.assignment, state, now=now)
            for name, value in fields.items():
                setattr(ts.assignment, name, value)
            ts.assignment.next_check_at = now  # look again at once
            ts.assignment.epoch = await self.w.lease.check(session)

    # ---- create ----

    async def _manage(self, triple: Triple) -> bool:
        """Whether the triple exists in AWS — bringing its pair under management first."""
        async with self.w.db.sessions() as session:
            managed = await service.is_managed(session, triple)
        if managed:
            return await self.aws.exists(triple, priority=ACTIVATE)
        present = await self.aws.user_assignments(
            triple.account_id, triple.permission_set_arn, priority=ACTIVATE
        )
        await self.manage(triple, present)
        return triple.principal_id in present

    async def manage(self, pair: Triple, present: set[str]) -> int:
        """The pair comes under management: once grant-worker's own history has been read
        back (so its own assignments are known as its own), the user assignments AWS holds
        for it (`present`, just listed) are its standing baseline. Returns how many."""
        if not self.history_read:
            if self.w.history is not None and not await self.w.history.caught_up():
                raise Retry("reading back grant-worker's own history first", delay=0.05)
            # Once read back, the database holds our past; what we do next we record.
            self.history_read = True
        names = {p: await self._user_name(p) for p in present}
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            recorded = await service.record_baseline(
                session,
                pair,
                names,
                outbox=self.w.outbox,
                now=now,
                permission_set_name=await service.permission_set_name(session, pair),
            )
            await self.w.lease.check(session)
        if recorded:
            log.warning(
                "pair %s/%s under management: %d baseline assignment(s) recorded",
                pair.account_id,
                pair.permission_set_arn,
                recorded,
            )
        return recorded

    async def _user_name(self, principal_id: str) -> str | None:
        if self.w.user_names is None:
            return None
        try:
            return await self.w.user_names(principal_id)
        except Exception as exc:  # a name is a nicety for the audit trail: never blocks
            log.info("no user name for %s: %r", principal_id, exc)
            return None

    async def begin_create(self, triple: Triple) -> bool:
        """Check AWS first (an assignment already there is adopted, not created twice),
        then record the creation intent and create."""
        try:
            exists = await self._manage(triple)
        except AwsError as exc:
            raise Retry(str(exc)) from exc
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            if ts.assignment.state != AssignmentState.ABSENT.value:
                return True  # things moved on meanwhile: plan again
            new = AssignmentState.PRESENT if exists else AssignmentState.CREATING
            service.set_assignment(ts.assignment, new, now=now)
            if exists:
                await self._restored(session, ts)
            ts.assignment.epoch = await self.w.lease.check(session)
        if not exists:
            self.unsent.add(triple)
            failpoint("grant.after_create_intent")
            return await self.create(triple, None)
        return True

    async def create(self, triple: Triple, request_id: str | None) -> bool:
        """Returns whether the triple has more to do (False: it only waits now)."""
        try:
            async with self.aws.gate.slot(ACTIVATE):
                status, reason = "SUCCEEDED", None
                remember = False
                if request_id is None:
                    verify = triple not in self.unsent
                    self.unsent.discard(triple)
                    if not (verify and await self.aws.exists(triple, priority=ACTIVATE)):
                        request_id = await self._send(triple, self.aws.create(triple))
                        failpoint("grant.after_aws_create")
                        remember = True
                if request_id is not None:
                    status, reason = await self._poll(
                        triple, "create", request_id, remember=remember
                    )
        except AwsError as exc:
            if exc.retryable:
                raise Retry(str(exc)) from exc
            await self._creation_failed(triple, exc.message or exc.code, exc.code, terminal=True)
            return True
        if status == "SUCCEEDED":
            return await self._created(triple)
        await self._creation_failed(triple, reason or "creation FAILED", None, terminal=False)
        return True

    async def _created(self, triple: Triple) -> bool:
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            service.confirmed(ts.assignment, AssignmentState.PRESENT, now=now)
            await self._restored(session, ts)
            after = await self.w.advance(session, ts, now=now)  # activate, in this transaction
            ts.assignment.epoch = await self.w.lease.check(session)
        return after.step is not Step.WAIT

    async def _restored(self, session: AsyncSession, ts: service.TripleState) -> None:
        """The assignment is there for our grants: not drift; if it had been deleted out of
        band while a grant needed it, say it was put back."""
        row = ts.assignment
        row.found = False
        if row.missing:
            row.missing = False
            await service.report_drift(
                session,
                service.triple_of_row(row),
                kind="missing_assignment",
                action="restored",
                outbox=self.w.outbox,
            )

    async def _creation_failed(
        self, triple: Triple, failure: str, code: str | None, *, terminal: bool
    ) -> None:
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            row = ts.assignment
            row.attempts += 1
            row.last_error = failure
            service.set_assignment(row, AssignmentState.ABSENT, now=now)
            row.next_check_at = now
            give_up = terminal or row.attempts >= self.w.settings.activation_attempts
            if give_up:
                waiting = [
                    g.grant_id
                    for g in ts.grants
                    if g.state == GrantState.SCHEDULED.value and g.stop_kind is None
                ]
                await service.fail_activations(
                    session, ts, waiting, outbox=self.w.outbox, reason=failure, code=code
                )
                row.attempts = 0
            row.epoch = await self.w.lease.check(session)
        if not give_up:
            raise Retry(f"creation FAILED ({failure})")

    # ---- delete ----

    async def delete(self, triple: Triple, request_id: str | None) -> bool:
        """Returns whether the triple has more to do (False: it only waits now).

        AWS's request id of a delete is not recorded: after a crash the intent is resumed
        by asking whether the assignment still exists (not found counts as done)."""
        self.revoking += 1
        self.no_revocations.clear()
        try:
            return await self._delete(triple, request_id)
        finally:
            self.revoking -= 1
            if not self.revoking:
                self.no_revocations.set()

    async def _delete(self, triple: Triple, request_id: str | None) -> bool:
        try:
            async with self.aws.gate.slot(REVOKE):
                status, reason = "SUCCEEDED", None
                if request_id is None:
                    verify = triple not in self.unsent
                    self.unsent.discard(triple)
                    if not verify or await self.aws.exists(triple, priority=REVOKE):
                        sent = await self._send(triple, self.aws.delete(triple))
                        failpoint("grant.mid_revoke")
                        request_id = sent or None
                if request_id is not None:
                    status, reason = await self._poll(triple, "delete", request_id)
        except AwsError as exc:
            await self._revocation_failure(triple, str(exc), still_present=False)
            return True
        if status != "SUCCEEDED":
            await self._revocation_failure(triple, reason or "deletion FAILED", still_present=True)
            return True
        failpoint("grant.after_aws_delete")
        return await self._deleted(triple)

    async def _deleted(self, triple: Triple) -> bool:
        name = await self.w.cutter.name_of(triple)
        duration = await self.w.cutter.session_duration(name)
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            ts = await service.load(session, triple, now=now)
            service.confirmed(ts.assignment, AssignmentState.ABSENT, now=now)
            cut = self.w.cutter.record(session, triple, name=name, now=now)
            for grant in ts.grants:
                if grant.state == GrantState.ACTIVE.value:
                    since = grant.stop_at or grant.end_at or now
                    REVOCATION_LAG.observe(max(0.0, (now - since).total_seconds()))
            if ts.assignment.found:  # drift removal (the flag stays until its grants settle)
                await service.report_drift(
                    session,
                    triple,
                    kind="unexpected_assignment",
                    action="removed",
                    outbox=self.w.outbox,
                )
            # end its grants, here
            after = await self.w.advance(
                session, ts, now=now, sessions_cut=cut, session_duration=duration
            )
            ts.assignment.epoch = await self.w.lease.check(session)
        return after.step is not Step.WAIT

    async def _revocation_failure(self, triple: Triple, error: str, *, still_present: bool) -> None:
        now = self.w.clock.now()
        settings = self.w.settings
        delay: float | None = None
        async with self.w.db.transaction() as session:
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
                    ending = [g.grant_id for g in ts.grants if g.state == GrantState.ACTIVE.value]
                    REVOCATION_FAILED.inc(len(ending) or 1)
                    await service.alert_revocation(
                        session,
                        ts,
                        ending,
                        outbox=self.w.outbox,
                        error=error,
                        next_attempt_at=now + timedelta(seconds=delay),
                    )
            row.epoch = await self.w.lease.check(session)
        raise Retry(f"revocation failed: {error}", delay=delay)

    # ---- AWS calls ----

    async def _send(self, triple: Triple, call: Awaitable[str | None]) -> str:
        """Await an AWS write; a failure that surely sent nothing keeps the intent unsent."""
        try:
            result = await call
        except AwsError as exc:
            if not exc.ambiguous:
                self.unsent.add(triple)
            raise
        return str(result) if result is not None else ""

    async def _poll(
        self, triple: Triple, kind: str, request_id: str, *, remember: bool = False
    ) -> tuple[str, str | None]:
        """Poll the write's status until it is final. With `remember`, AWS's request id is
        recorded before the first wait — not before the first poll, which often finds the
        write done: a crash before then leaves an intent without an id, resumed by asking
        whether the assignment exists (the protocol's other half), one write less."""
        settings = self.w.settings
        delay = settings.poll_initial_seconds
        for poll in range(settings.poll_max_count):
            if poll:  # the first poll at once: AWS is often done already
                if remember:
                    await self._record(triple, None, request_id=request_id)
                    remember = False
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, settings.poll_max_seconds)
            try:
                status, reason = await self.aws.status(kind, request_id)
            except AwsError as exc:
                if not exc.retryable:
                    # AWS does not know the request (any more): forget the id, so the
                    # intent is resumed by asking whether the assignment exists.
                    await self._record(triple, None, request_id=None)
                    raise Retry(f"{kind} status of {request_id}: {exc}") from exc
                status, reason = "IN_PROGRESS", None
            if status in ("SUCCEEDED", "FAILED"):
                return status, reason
        raise Retry(f"{kind} {request_id} still in progress")
