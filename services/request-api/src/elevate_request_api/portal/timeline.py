"""The request page's visual timeline: requested → approved → active → ended, each step
done (with when), the one now, or still to come — derived from the read model's timeline
entries (each carries the status it left the request in), so it needs nothing new."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from elevate_request_api.domain import FINAL, Status
from elevate_request_api.models import ActivityRecord, UncoveredActivity

State = Literal["done", "now", "next", "skipped"]
Flag = Literal["", "outlived", "uncovered"]


class Entry(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    state: State
    at: datetime | None = None


_APPROVED = {Status.APPROVED, Status.SCHEDULED, Status.ACTIVE, Status.REVOCATION_FAILED}


def _first(entries: Sequence[Entry], statuses: Collection[str]) -> datetime | None:
    return next((e.at for e in entries if e.status in statuses), None)


def _step(label: str, at: datetime | None, *, now: bool, skipped: bool) -> Step:
    if at is not None:
        return Step(label, "done", at)
    return Step(label, "skipped" if skipped else "now" if now else "next")


def steps(status: str, entries: Sequence[Entry]) -> list[Step]:
    """The four steps of a request now in `status`, from its timeline `entries`."""
    final = status in FINAL
    approved, active = _first(entries, _APPROVED), _first(entries, {Status.ACTIVE})
    ended_at = _first(entries, FINAL) if final else None
    return [
        Step("Requested", "done", entries[0].at if entries else None),
        _step("Approved", approved, now=status == Status.PENDING, skipped=final),
        _step("Active", active, now=status in (Status.APPROVED, Status.SCHEDULED), skipped=final),
        # the last step names how it ended: ended, revoked, rejected, cancelled, …
        _step(
            status.replace("_", " ").capitalize() if final else "Ended",
            ended_at,
            now=status in (Status.ACTIVE, Status.REVOCATION_FAILED),
            skipped=False,
        ),
    ]


@dataclass(frozen=True, slots=True)
class Action:
    """One row of a request's session activity."""

    at: datetime
    operation: str
    service: str | None
    source_ip: str | None
    result: str | None
    flag: Flag


def _row(a: ActivityRecord | UncoveredActivity, flag: Flag) -> Action:
    return Action(a.at, a.operation, a.service, a.source_ip, a.result, flag)


def _flag(action: ActivityRecord) -> Literal["", "outlived"]:
    return "outlived" if action.outlived else ""


def activity_rows(
    correlated: Sequence[ActivityRecord], uncovered: Sequence[UncoveredActivity]
) -> list[Action]:
    """The request's correlated actions (each flagged if it outlived the grant) and the
    requester's uncovered ones around it, in time order."""
    rows = [
        Action(a.at, a.operation, a.service, a.source_ip, a.result, _flag(a)) for a in correlated
    ]
    rows += [
        Action(u.at, u.operation, u.service, u.source_ip, u.result, "uncovered") for u in uncovered
    ]
    return sorted(rows, key=lambda r: r.at)
