"""Pure decisions of grant-worker: the grant state machine and the holding rule for an
assignment triple. No I/O, no clock of its own: callers pass `now`.

Grant states:

    scheduled ──activation due──▶ activating ──AWS SUCCEEDED──▶ active
        │  (end passed: lapsed)      │  (FAILED n times / terminal error: failed)
        │                            ▼                            │
        └─cancel/revoke: cancelled  revoking ◀──end / revoke / cancel┘
                                     │ AWS deletion SUCCEEDED, or another holder remains
                                     ▼
                                   ended (reason expired | revoked | cancelled)

An assignment (account, permission set, user) is *held* by every grant in `activating` or
`active`. It is deleted only when nobody holds it and it is not standing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal


class GrantState(StrEnum):
    SCHEDULED = "scheduled"
    ACTIVATING = "activating"
    ACTIVE = "active"
    REVOKING = "revoking"
    ENDED = "ended"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped before activation: never created
    LAPSED = "lapsed"  # its end passed before it could be activated: never created


HOLDING = frozenset({GrantState.ACTIVATING, GrantState.ACTIVE})
TERMINAL = frozenset({GrantState.ENDED, GrantState.FAILED, GrantState.CANCELLED, GrantState.LAPSED})

StopReason = Literal["expired", "revoked", "cancelled"]


class AssignmentState(StrEnum):
    ABSENT = "absent"
    PRESENT = "present"
    CREATING = "creating"  # intent recorded: a create may have been sent
    DELETING = "deleting"  # intent recorded: a delete may have been sent


class Action(StrEnum):
    NONE = "none"
    CREATE = "create"
    DELETE = "delete"
    RESUME_CREATE = "resume_create"
    RESUME_DELETE = "resume_delete"
    SETTLE = "settle"  # state and events only: no AWS call needed


ApprovalOutcome = Literal["schedule", "activate_now", "lapsed", "stopped"]


def on_approved(*, start: datetime, end: datetime, now: datetime, stopped: bool) -> ApprovalOutcome:
    """What an approval leads to. A grant whose end has passed is never activated
    (replays from the earliest offset, late approvals)."""
    if stopped:
        return "stopped"
    if end <= now:
        return "lapsed"
    return "schedule" if start > now else "activate_now"


def on_activation_due(*, state: GrantState, end: datetime, now: datetime) -> GrantState | None:
    """The activation timer fired: the new state, or None to leave the grant alone."""
    if state is not GrantState.SCHEDULED:
        return None  # cancelled, revoked or already activating: the claim changes nothing
    return GrantState.LAPSED if end <= now else GrantState.ACTIVATING


def on_stop(*, state: GrantState, reason: StopReason) -> GrantState | None:
    """End time, revoke or cancel: the new state, or None when nothing changes."""
    if state is GrantState.SCHEDULED:
        return GrantState.LAPSED if reason == "expired" else GrantState.CANCELLED
    if state in HOLDING:
        return GrantState.REVOKING
    return None


@dataclass(frozen=True, slots=True)
class TripleView:
    """What the database says about one assignment triple."""

    assignment: AssignmentState
    activating: int = 0
    active: int = 0
    revoking: int = 0
    standing: bool = False

    @property
    def held(self) -> bool:
        return self.activating + self.active > 0


def plan(view: TripleView) -> Action:
    """The next step for a triple. Recorded intents are resumed first, so a half-made
    write of our own is finished (never mistaken for someone else's)."""
    if view.assignment is AssignmentState.CREATING:
        return Action.RESUME_CREATE
    if view.assignment is AssignmentState.DELETING:
        return Action.RESUME_DELETE
    if view.held:
        if view.assignment is AssignmentState.ABSENT:
            return Action.CREATE
        return Action.SETTLE if (view.activating or view.revoking) else Action.NONE
    if view.assignment is AssignmentState.PRESENT and not view.standing:
        return Action.DELETE
    return Action.SETTLE if view.revoking else Action.NONE


def removal_keeps_access(view: TripleView) -> bool:
    """Whether ending a grant on this triple must leave the assignment in place."""
    return view.held or view.standing
