"""The re-check before a grant is first served (elevate_core.recheck), with grant-worker's
own policy copy, directory and managed scope.

An approval is only a claim: whoever could write it, grant-worker serves a grant only once
it holds under grant-worker's policy *now* — the requester exists with that user id and is
eligible, the window and ticket satisfy the rule, the permission set ARN is the one the
directory has for its name, the pair is in the managed scope, the management account only
where a rule names it. A grant is checked when it first wants its assignment (its start,
the replay gate passed); until then, and while the check cannot be made (the directory
unavailable: retried like every other transient failure), it is not served. A refusal
fails the grant — `GrantFailed` with the reason code, the alert metric, an error log — and
no AWS call is made for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from elevate_core.access import AccessControl
from elevate_core.events.models import RequestSnapshot
from elevate_core.policy.recheck import Limits, Refusal, RequestFacts
from elevate_core.policy.terms import Terms
from elevate_core.recheck import recheck, report

from elevate_grant_worker import service
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.domain import GrantState
from elevate_grant_worker.sweep import ScopeProvider

if TYPE_CHECKING:
    from elevate_grant_worker.worker import AssignmentWorker

log = logging.getLogger(__name__)
SERVICE = "grant-worker"

#: Re-checks one approved request; `submitted_at` anchors its start horizon.
GrantRecheck = Callable[[RequestSnapshot, datetime], Awaitable[Terms | Refusal]]


def policy_recheck(
    access: AccessControl, scope: ScopeProvider, *, horizon: timedelta
) -> GrantRecheck:
    """The re-check under the policy, directory and managed scope grant-worker holds."""

    async def check(snapshot: RequestSnapshot, submitted_at: datetime) -> Terms | Refusal:
        return await recheck(
            RequestFacts.of(snapshot, submitted_at=submitted_at),
            policy=access.policy,
            directory=access.directory,
            limits=Limits(horizon=horizon),
            scope=await scope(),
        )

    return check


@dataclass(frozen=True, slots=True)
class Pending:
    """A grant that would be served now but has not been re-checked yet."""

    grant_id: str
    request_id: str
    snapshot: RequestSnapshot
    # The start horizon counts from when grant-worker recorded the approval: it comes
    # after the submission, and the event's own say cannot be trusted.
    recorded_at: datetime


def pending(ts: service.TripleState, now: datetime) -> list[Pending]:
    """The triple's grants waiting for their re-check: approved, not stopped, not yet
    checked, and wanting the assignment now."""
    return [
        Pending(g.grant_id, g.request_id, service.snapshot_of(g), g.created_at)
        for g in ts.grants
        if g.state == GrantState.SCHEDULED.value
        and g.stop_kind is None
        and g.rechecked_at is None
        and g.snapshot is not None
        and g.start_at is not None
        and g.end_at is not None
        and g.start_at <= now < g.end_at
    ]


async def recheck_grants(w: AssignmentWorker, triple: Triple, grants: list[Pending]) -> bool:
    """Re-check `grants` (outside any transaction: the directory is slow), then record the
    outcomes under the lease: passed, or failed with `GrantFailed`. Returns True (the
    triple is planned again at once)."""
    assert w.recheck is not None
    verdicts = [(p, await w.recheck(p.snapshot, p.recorded_at)) for p in grants]
    now = w.clock.now()
    refused: list[tuple[Pending, Refusal]] = []
    async with w.db.transaction() as session:
        ts = await service.load(session, triple, now=now)
        live = {g.grant_id: g for g in ts.grants}
        for p, verdict in verdicts:
            grant = live.get(p.grant_id)
            if grant is None or grant.stop_kind is not None or grant.rechecked_at is not None:
                continue  # settled meanwhile (a stop wins: it ends the grant instead)
            if isinstance(verdict, Refusal):
                await service.fail_activations(
                    session,
                    ts,
                    [p.grant_id],
                    outbox=w.outbox,
                    reason=f"re-check refused: {verdict.reason}",
                    code=None,
                    reason_code=verdict.code.value,
                )
                refused.append((p, verdict))
            else:
                grant.rechecked_at = now
        ts.assignment.next_check_at = now
        ts.assignment.epoch = await w.lease.check(session)
    for p, refusal in refused:
        report(refusal, service=SERVICE, request_id=p.request_id)
    return True
