"""The session cut, level-triggered (docs/grant-worker.md, "Session cut").

When an assignment of an opted-in permission set is removed, the transaction that records
the removal also records a *pending* cut (`record`). The worker then, per permission set
and one at a time (`apply`): drops cuts that someone still holds (a live grant or a
standing entry of the same triple, or a group assignment of the pair that includes the
user — the same role serves them), reads the inline policy, refuses — with
`SessionCutRefused` — when the target account has unprovisioned changes that are not
Elevate's (provisioning would push them), merges Elevate's Deny statements into it
(`sessions.merge`: the operator's statements equal and in order), writes it and provisions
it to each cut's account only, confirmed with `DescribePermissionSetProvisioningStatus`.
Statements past their expiry are removed by the same merge, whenever the permission set
is looked at and at the earliest expiry recorded — read from the policy itself, so a
restart loses nothing.

The text Elevate is about to write is recorded before the write (`intended`), so after a
crash between the two the policy is still recognised as Elevate's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from elevate_core.events.models import SessionCutRefused
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service
from elevate_grant_worker.aws import AwsError, Triple
from elevate_grant_worker.metrics import SESSION_CUT_FAILURES, SESSION_CUT_OLDEST_PENDING
from elevate_grant_worker.models import Grant, PermissionSetPolicy, SessionCut, Standing
from elevate_grant_worker.provisioning import PermissionSets
from elevate_grant_worker.sessions import (
    LONGEST_SESSION,
    Cut,
    ForeignPolicyError,
    PolicyTooLargeError,
    cut_key,
    merge,
    session_duration,
)
from elevate_grant_worker.steps import Retry

if TYPE_CHECKING:
    from elevate_grant_worker.worker import AssignmentWorker

log = logging.getLogger(__name__)
Refusal = Literal["policy_too_large", "foreign_changes_pending", "policy_unreadable"]
# Whether a permission set (by name) is opted in; None: nobody is (cuts off).
OptedIn = Callable[[str | None], bool]
# A permission set's session duration (ISO 8601) by name, from the directory's listing.
Durations = Callable[[str], Awaitable[str | None]]


class SessionCutter:
    def __init__(
        self,
        worker: AssignmentWorker,
        *,
        opted_in: OptedIn | None = None,
        durations: Durations | None = None,
    ) -> None:
        self.w = worker
        self.opted_in: OptedIn = opted_in or (lambda _name: False)
        self.durations = durations
        self.api = PermissionSets(worker.aws)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # A permission set whose pass failed waits out a backoff (failures, due on the
        # monotonic clock): a permanent refusal must not spend the revocation lane.
        self._backoff: dict[str, tuple[int, float]] = {}

    # ---- recording, inside the removal's transaction ----

    async def name_of(self, triple: Triple) -> str | None:
        """The permission set's name, read once before a removal's transaction."""
        async with self.w.db.sessions() as session:
            return await service.permission_set_name(session, triple)

    async def session_duration(self, name: str | None) -> timedelta:
        """How long sessions issued before a removal may still work without a cut (AWS's
        longest when it cannot be told)."""
        try:
            iso = await self.durations(name) if self.durations and name else None
            return session_duration(iso) if iso else LONGEST_SESSION
        except Exception as exc:  # a nicety for the API: never blocks a revocation
            log.info("no session duration for %s: %r", name, exc)
            return LONGEST_SESSION

    async def enabled(self, session: AsyncSession, triple: Triple) -> bool:
        return self.opted_in(await service.permission_set_name(session, triple))

    def record(
        self, session: AsyncSession, triple: Triple, *, name: str | None, now: datetime
    ) -> bool:
        """Record a pending cut for a removed assignment; whether one was recorded."""
        if not self.opted_in(name):
            return False
        session.add(
            SessionCut(
                account_id=triple.account_id,
                permission_set_arn=triple.permission_set_arn,
                principal_id=triple.principal_id,
                cut_at=now,
                state="pending",
                updated_at=now,
            )
        )
        return True

    # ---- applying ----

    async def due(self, now: datetime) -> list[str]:
        """Permission sets with pending cuts or a statement past its expiry (and the age of
        the oldest pending cut, for the alert)."""
        async with self.w.db.sessions() as session:
            oldest = await session.scalar(
                select(func.min(SessionCut.cut_at)).where(SessionCut.state == "pending")
            )
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            SESSION_CUT_OLDEST_PENDING.set(max(0.0, age))
            pending = select(SessionCut.permission_set_arn).where(SessionCut.state == "pending")
            expiring = select(PermissionSetPolicy.permission_set_arn).where(
                PermissionSetPolicy.next_expiry <= now
            )
            rows = (await session.execute(pending.union(expiring))).scalars().all()
        return sorted(set(rows))

    async def run_once(self) -> int:
        """Apply every due permission set; returns how many were looked at. One that
        fails is logged, and looked at again after a backoff; the others go on."""
        clock = time.monotonic()
        arns = [
            arn
            for arn in await self.due(self.w.clock.now())
            if self._backoff.get(arn, (0, 0.0))[1] <= clock
        ]
        for arn in arns:
            try:
                await self.apply(arn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _failed(arn, exc)
                failures = self._backoff.get(arn, (0, 0.0))[0] + 1
                settings = self.w.settings
                delay = min(
                    settings.retry_max_seconds,
                    settings.retry_base_seconds * 2 ** min(failures - 1, 20),
                )
                self._backoff[arn] = (failures, time.monotonic() + delay)
            else:
                self._backoff.pop(arn, None)
        return len(arns)

    def retry_due(self) -> float | None:
        """When (monotonic) the first backed-off permission set may be tried again."""
        return min((due for _, due in self._backoff.values()), default=None)

    async def apply(self, permission_set_arn: str) -> None:
        async with self._locks[permission_set_arn]:  # inline-policy changes serialised
            try:
                await self._apply(permission_set_arn)
            except AwsError as exc:
                raise Retry(f"session cut on {permission_set_arn}: {exc}") from exc

    async def _apply(self, arn: str) -> None:
        cuts = await self._to_cut(arn)
        duration = session_duration(await self.api.session_duration(arn))
        current = await self.api.inline_policy(arn)
        wanted = [Cut(c.principal_id, c.account_id, c.cut_at, c.cut_at + duration) for c in cuts]
        accounts = sorted({c.account_id for c in cuts})
        if cuts and accounts:
            pending = await self.api.unprovisioned_accounts(arn) & set(accounts)
            if pending and not await self._ours(arn, current):
                detail = f"unprovisioned changes in {', '.join(sorted(pending))} are not Elevate's"
                await self._refuse(cuts, "foreign_changes_pending", detail)
                return
        now = self.w.clock.now()
        try:
            merged = merge(current, wanted, now=now)
        except PolicyTooLargeError as exc:
            await self._refuse(cuts, "policy_too_large", str(exc))
            return
        except ForeignPolicyError as exc:
            await self._refuse(cuts, "policy_unreadable", str(exc))
            return
        if merged.changed:
            await self._intend(arn, merged.text, now=now)
            await self.api.write_inline_policy(arn, merged.text)
            await self._wrote(arn, merged.text, next_expiry=merged.next_expiry, now=now)
        else:  # nothing written: nothing claimed as Elevate's (a record of ours follows)
            await self._remember(
                arn,
                lambda r: setattr(r, "next_expiry", merged.next_expiry),
                now=now,
                create=False,
            )
        for account in accounts:
            await self._provision(arn, account)
        await self._settle(cuts, {c.key: c.expires_at for c in wanted})

    async def _to_cut(self, arn: str) -> list[SessionCut]:
        """The pending cuts of the permission set that nobody still holds (the others are
        settled as `held` or `off` here). The database is read in one session, and AWS
        asked about group assignments after it is closed."""
        off: list[SessionCut] = []
        held: list[SessionCut] = []
        unheld: list[SessionCut] = []
        async with self.w.db.sessions() as session:
            rows = (
                await session.execute(
                    select(SessionCut).where(
                        SessionCut.state == "pending", SessionCut.permission_set_arn == arn
                    )
                )
            ).scalars()
            for row in rows:
                triple = Triple(row.account_id, row.permission_set_arn, row.principal_id)
                if not await self.enabled(session, triple):
                    off.append(row)
                elif await _held_here(session, triple, row.cut_at):
                    held.append(row)
                else:
                    unheld.append(row)
        out: list[SessionCut] = []
        for row in unheld:
            if await self.api.group_holds(row.account_id, arn, row.principal_id):
                held.append(row)
            else:
                out.append(row)
        await self._mark(off, "off", "the permission set is no longer opted in")
        await self._mark(held, "held", "another grant, standing entry or group holds it")
        return out

    async def _ours(self, arn: str, current: str) -> bool:
        """Whether the inline policy is what Elevate last wrote (or was about to write)."""
        async with self.w.db.sessions() as session:
            record = await session.get(PermissionSetPolicy, arn)
        if record is None:
            return False
        return current in {t for t in (record.written, record.intended) if t is not None}

    async def _intend(self, arn: str, text: str | None, *, now: datetime) -> None:
        await self._remember(arn, lambda r: setattr(r, "intended", text or ""), now=now)

    async def _wrote(
        self, arn: str, text: str | None, *, next_expiry: datetime | None, now: datetime
    ) -> None:
        def done(record: PermissionSetPolicy) -> None:
            record.written, record.intended, record.next_expiry = text or "", None, next_expiry

        await self._remember(arn, done, now=now)

    async def _remember(
        self,
        arn: str,
        change: Callable[[PermissionSetPolicy], None],
        *,
        now: datetime,
        create: bool = True,
    ) -> None:
        async with self.w.db.transaction() as session:
            record = await session.get(PermissionSetPolicy, arn, with_for_update=True)
            if record is None:
                if not create:
                    return  # a permission set Elevate never wrote gets no record
                record = PermissionSetPolicy(permission_set_arn=arn)
                session.add(record)
            change(record)
            record.updated_at = now
            await self.w.lease.check(session)

    async def _provision(self, arn: str, account: str) -> None:
        request_id = await self.api.provision(arn, account)
        settings = self.w.settings
        delay = settings.poll_initial_seconds
        for poll in range(settings.poll_max_count):
            if poll:
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.poll_max_seconds)
            status, reason = await self.api.provisioning_status(request_id)
            if status == "SUCCEEDED":
                return
            if status == "FAILED":
                raise Retry(f"provisioning {arn} to {account} FAILED: {reason}")
        raise Retry(f"provisioning {arn} to {account} still IN_PROGRESS")

    async def _settle(self, cuts: list[SessionCut], expiry: dict[str, datetime]) -> None:
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            for cut in cuts:
                row = await session.get(SessionCut, cut.id, with_for_update=True)
                if row is not None and row.state == "pending":
                    row.state, row.updated_at = "applied", now
                    row.expires_at = expiry.get(cut_key(row.principal_id, row.account_id))
            await self.w.lease.check(session)
        for cut in cuts:
            log.warning(
                "sessions of %s in %s on %s issued before %s cut",
                cut.principal_id,
                cut.account_id,
                cut.permission_set_arn,
                cut.cut_at.isoformat(),
            )

    async def _mark(self, cuts: list[SessionCut], state: str, detail: str) -> None:
        if not cuts:
            return
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            for cut in cuts:
                row = await session.get(SessionCut, cut.id, with_for_update=True)
                if row is not None and row.state == "pending":
                    row.state, row.detail, row.updated_at = state, detail[:2000], now
            await self.w.lease.check(session)

    async def _refuse(self, cuts: list[SessionCut], reason: Refusal, detail: str) -> None:
        log.error("session cut refused (%s): %s", reason, detail)
        now = self.w.clock.now()
        async with self.w.db.transaction() as session:
            for cut in cuts:
                row = await session.get(SessionCut, cut.id, with_for_update=True)
                if row is None or row.state != "pending":
                    continue
                row.state, row.detail, row.updated_at = "refused", detail[:2000], now
                pair = Triple(row.account_id, row.permission_set_arn, row.principal_id)
                await self.w.outbox.add(
                    session,
                    SessionCutRefused(
                        account_id=row.account_id,
                        permission_set_arn=row.permission_set_arn,
                        permission_set_name=await service.permission_set_name(session, pair),
                        principal_id=row.principal_id,
                        cut_at=row.cut_at,
                        reason=reason,
                        detail=detail[:1000],
                    ),
                    subject=None,
                    key=row.account_id,
                )
            await self.w.lease.check(session)


def _failed(arn: str, exc: Exception) -> None:
    """Count and log a failed pass. AWS refusing outright (no permission, a bad request)
    is an error an operator must fix, not a blip: the cut waits, pending, until then."""
    cause = exc.__cause__ if isinstance(exc, Retry) else exc
    if isinstance(cause, AwsError) and not cause.retryable:
        SESSION_CUT_FAILURES.labels(cause.code).inc()
        log.error(
            "SECURITY: session cut on %s refused by AWS (%s); sessions issued before the "
            "removal keep working until this is fixed: %s",
            arn,
            cause.code,
            cause.message,
        )
        return
    SESSION_CUT_FAILURES.labels(cause.code if isinstance(cause, AwsError) else "other").inc()
    log.warning("session cut on %s: %r; retried at the next scan", arn, exc)


async def _held_here(session: AsyncSession, triple: Triple, cut_at: datetime) -> bool:
    """Whether a standing entry, or a grant of the triple that is active now, backs it."""
    key = (triple.account_id, triple.permission_set_arn, triple.principal_id)
    if await session.get(Standing, key) is not None:
        return True
    active = await session.execute(
        select(Grant.grant_id)
        .where(
            Grant.account_id == triple.account_id,
            Grant.permission_set_arn == triple.permission_set_arn,
            Grant.principal_id == triple.principal_id,
            Grant.state == "active",
            or_(Grant.activated_at.is_(None), Grant.activated_at <= cut_at),
        )
        .limit(1)
    )
    return active.first() is not None
