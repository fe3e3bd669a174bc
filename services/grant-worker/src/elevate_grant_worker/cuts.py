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
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from elevate_core.events.models import SessionCutRefused
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_grant_worker import service
from elevate_grant_worker.aws import AwsError, Triple
from elevate_grant_worker.models import Grant, PermissionSetPolicy, SessionCut, Standing
from elevate_grant_worker.provisioning import PermissionSets
from elevate_grant_worker.sessions import (
    LONGEST_SESSION,
    Cut,
    ForeignPolicyError,
    PolicyTooLargeError,
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

    # ---- recording, inside the removal's transaction ----

    async def session_duration(self, triple: Triple) -> timedelta:
        """How long sessions issued before a removal may still work without a cut (read
        before the removal's transaction; AWS's longest when it cannot be told)."""
        try:
            async with self.w.db.sessions() as session:
                name = await service.permission_set_name(session, triple)
            iso = await self.durations(name) if self.durations and name else None
            return session_duration(iso) if iso else LONGEST_SESSION
        except Exception as exc:  # a nicety for the API: never blocks a revocation
            log.info("no session duration for %s: %r", triple.permission_set_arn, exc)
            return LONGEST_SESSION

    async def enabled(self, session: AsyncSession, triple: Triple) -> bool:
        return self.opted_in(await service.permission_set_name(session, triple))

    async def record(self, session: AsyncSession, triple: Triple, *, now: datetime) -> bool:
        """Record a pending cut for a removed assignment; whether one was recorded."""
        if not await self.enabled(session, triple):
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
        """Permission sets with pending cuts or a statement past its expiry."""
        async with self.w.db.sessions() as session:
            pending = select(SessionCut.permission_set_arn).where(SessionCut.state == "pending")
            expiring = select(PermissionSetPolicy.permission_set_arn).where(
                PermissionSetPolicy.next_expiry <= now
            )
            rows = (await session.execute(pending.union(expiring))).scalars().all()
        return sorted(set(rows))

    async def run_once(self) -> int:
        """Apply every due permission set; returns how many were looked at. One that
        fails is logged and looked at again at the next scan; the others go on."""
        arns = await self.due(self.w.clock.now())
        for arn in arns:
            try:
                await self.apply(arn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("session cut on %s: %r; retried at the next scan", arn, exc)
        return len(arns)

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
        else:  # nothing written: nothing claimed as Elevate's
            await self._remember(
                arn, lambda r: setattr(r, "next_expiry", merged.next_expiry), now=now
            )
        for account in accounts:
            await self._provision(arn, account)
        await self._settle(cuts, {c.key: c.expires_at for c in wanted})

    async def _to_cut(self, arn: str) -> list[SessionCut]:
        """The pending cuts of the permission set that nobody still holds (the others are
        settled as `held` or `off` here)."""
        async with self.w.db.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(SessionCut).where(
                            SessionCut.state == "pending", SessionCut.permission_set_arn == arn
                        )
                    )
                )
                .scalars()
                .all()
            )
        out: list[SessionCut] = []
        for row in rows:
            triple = Triple(row.account_id, row.permission_set_arn, row.principal_id)
            async with self.w.db.sessions() as session:
                enabled = await self.enabled(session, triple)
                held = enabled and await _held_here(session, triple, row.cut_at)
            if not enabled:
                await self._mark([row], "off", "the permission set is no longer opted in")
            elif held or await self.api.group_holds(*_pair(triple), row.principal_id):
                await self._mark([row], "held", "another grant, standing entry or group holds it")
            else:
                out.append(row)
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
        self, arn: str, change: Callable[[PermissionSetPolicy], None], *, now: datetime
    ) -> None:
        async with self.w.db.transaction() as session:
            record = await session.get(PermissionSetPolicy, arn, with_for_update=True)
            if record is None:
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
                    row.expires_at = expiry.get(
                        Cut(row.principal_id, row.account_id, row.cut_at, now).key
                    )
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


def _pair(triple: Triple) -> tuple[str, str]:
    return triple.account_id, triple.permission_set_arn


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
