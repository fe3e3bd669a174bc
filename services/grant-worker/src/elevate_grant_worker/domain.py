"""Pure decisions of grant-worker. No I/O, no clock of its own: callers pass `now`.

grant-worker is level-triggered: whether an assignment (account, permission set, user) —
a *triple* — should exist is computed from its grants, its standing entry and the clock,
every time it is looked at. Nothing depends on one event being seen at one moment: a lost
step is a delay, never a permanent grant.

A grant *wants* the assignment while it is approved, not stopped (cancelled or revoked),
not failed, and `start <= now < end`; it is *eligible* to be served when, in addition, the
stops published before its approval are known to have been read (`ready`, the replay
gate) and it passed the re-check against grant-worker's own policy (`checked`) — or it was
already served. `plan()` compares that with what is recorded of AWS:

    recorded \\ wanted      somebody eligible wants it      nobody does
    absent                 CREATE                          settle / wait
    present                settle (activate) / wait        DELETE, unless standing
    creating / deleting    resume the write first, then plan again

Grants move `scheduled → active → ended`, or `scheduled → ended` (stopped or lapsed before
it was served) or `scheduled → failed`. A grant *ends* (one `GrantEnded`) only when its
access is really gone or really held by another holder: never while a create on its behalf
may still be in flight, never before AWS confirmed a deletion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

StopKind = Literal["cancelled", "revoked"]
EndReason = Literal["expired", "revoked", "cancelled", "drift"]


class GrantState(StrEnum):
    UNAPPROVED = "unapproved"  # a stop seen before its approval: the row waits for it
    SCHEDULED = "scheduled"  # approved, not served yet
    ACTIVE = "active"  # GrantActivated: the assignment exists for it
    ENDED = "ended"  # GrantEnded
    FAILED = "failed"  # GrantFailed


TERMINAL = frozenset({GrantState.ENDED, GrantState.FAILED})


class AssignmentState(StrEnum):
    ABSENT = "absent"
    PRESENT = "present"
    CREATING = "creating"  # intent recorded: a create may have been sent
    DELETING = "deleting"  # intent recorded: a delete may have been sent


class Step(StrEnum):
    RESUME_CREATE = "resume_create"
    RESUME_DELETE = "resume_delete"
    CREATE = "create"
    DELETE = "delete"
    SETTLE = "settle"  # grant events only: no AWS call
    WAIT = "wait"  # nothing to do until `look_again_at`


@dataclass(frozen=True, slots=True)
class GrantFacts:
    grant_id: str
    state: GrantState
    start: datetime
    end: datetime
    stop: StopKind | None = None
    ready: bool = True
    checked: bool = True  # passed the re-check (or none is made)

    def wants(self, now: datetime) -> bool:
        return (
            self.state in (GrantState.SCHEDULED, GrantState.ACTIVE)
            and self.stop is None
            and self.start <= now < self.end
        )

    def eligible(self, now: datetime) -> bool:
        if self.state is GrantState.ACTIVE:
            return self.wants(now)
        return self.wants(now) and self.ready and self.checked

    def end_reason(self, now: datetime) -> EndReason | None:
        """Why this grant should be over by now, if it should."""
        if self.state in TERMINAL:
            return None
        if self.stop is not None:
            return self.stop
        return "expired" if now >= self.end else None


@dataclass(frozen=True, slots=True)
class TripleFacts:
    assignment: AssignmentState
    grants: tuple[GrantFacts, ...] = ()  # its approved, not yet terminal grants
    standing: bool = False
    # "found": present in AWS though Elevate neither made nor adopted it for a grant —
    # drift, removed only when removal is switched on (the default only reports it).
    found: bool = False
    removal: bool = False
    drift_reported: bool = False


@dataclass(frozen=True, slots=True)
class Ending:
    grant_id: str
    reason: EndReason
    removed: bool  # the grant's access was removed from AWS (False: kept by another)


@dataclass(frozen=True, slots=True)
class Plan:
    step: Step
    activate: tuple[str, ...] = ()
    end: tuple[Ending, ...] = ()
    look_again_at: datetime | None = None
    report_drift: bool = False  # an unexpected assignment, to report (dry run) once


def wanted(facts: TripleFacts, now: datetime) -> bool:
    return any(g.eligible(now) for g in facts.grants)


def plan(facts: TripleFacts, now: datetime) -> Plan:
    """The one next step for a triple."""
    a = facts.assignment
    if a is AssignmentState.CREATING:
        return Plan(Step.RESUME_CREATE)
    if a is AssignmentState.DELETING:
        return Plan(Step.RESUME_DELETE)
    want = wanted(facts, now)
    if a is AssignmentState.ABSENT and want:
        return Plan(Step.CREATE)
    if a is AssignmentState.PRESENT and not want and not facts.standing:
        if facts.found and not facts.removal:  # dry run: reported, never removed
            return Plan(
                Step.WAIT,
                look_again_at=look_again_at(facts, now),
                report_drift=not facts.drift_reported,
            )
        return Plan(Step.DELETE)
    activate = tuple(
        g.grant_id
        for g in facts.grants
        if a is AssignmentState.PRESENT and g.state is GrantState.SCHEDULED and g.eligible(now)
    )
    endings = tuple(_endings(facts, now))
    if activate or endings:
        return Plan(Step.SETTLE, activate=activate, end=endings)
    return Plan(Step.WAIT, look_again_at=look_again_at(facts, now))


def _endings(facts: TripleFacts, now: datetime) -> list[Ending]:
    out = []
    for g in facts.grants:
        reason = g.end_reason(now)
        if reason is None:
            continue
        served = g.state is GrantState.ACTIVE
        removed = served and facts.assignment is AssignmentState.ABSENT
        if facts.found and reason == "expired":
            reason = "drift"  # its access outlived its window and was removed as drift
        out.append(Ending(g.grant_id, reason, removed))
    return out


def look_again_at(facts: TripleFacts, now: datetime) -> datetime | None:
    """When what this triple should look like changes next (a timer is only a hint)."""
    times: list[datetime] = []
    for g in facts.grants:
        if g.state in TERMINAL or g.stop is not None:
            continue
        if g.start > now:
            times.append(g.start)
        elif g.end > now:
            times.append(g.end)
    return min(times) if times else None


def gated(facts: TripleFacts, now: datetime) -> tuple[str, ...]:
    """Grants that would be served but wait on the replay gate or their re-check (looked
    at again as soon as the stops consumer commits or the check is done, not at a time)."""
    return tuple(g.grant_id for g in facts.grants if g.wants(now) and not g.eligible(now))


def replay_gate_passed(gate: dict[str, int] | None, progress: dict[str, int]) -> bool:
    """Whether the stops consumer has read, on every partition, at least as far as the end
    offsets observed when the approval was recorded (`gate`: partition → offset)."""
    if not gate:
        return True
    return all(progress.get(p, 0) >= offset for p, offset in gate.items())
