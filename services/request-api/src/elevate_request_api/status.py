"""The request status machine of the read model (ARCHITECTURE.md §2), pure.

Grant events are facts about AWS and always move the status (access that exists is
shown as active even if the user asked to cancel meanwhile); decision events only
move a request that is still waiting; nothing moves a request out of a final state
except the grant-worker's own later facts about the same grant.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    REVOCATION_FAILED = "revocation_failed"
    ENDED = "ended"
    REVOKED = "revoked"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ERROR = "error"


FINAL = frozenset(
    {Status.ENDED, Status.REVOKED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED, Status.ERROR}
)
CANCELLABLE = frozenset({Status.PENDING, Status.APPROVED, Status.SCHEDULED})
REVOCABLE = frozenset({Status.APPROVED, Status.SCHEDULED, Status.ACTIVE, Status.REVOCATION_FAILED})
GRANT_END = {
    "expired": Status.ENDED,
    "revoked": Status.REVOKED,
    "cancelled": Status.CANCELLED,
    "drift": Status.REVOKED,
}


def after_event(current: Status, event: str, *, reason: str | None = None) -> Status:
    """The status after `event` (an event class name) is applied to `current`."""
    if event == "RequestApproved":
        return Status.APPROVED if current is Status.PENDING else current
    if event == "RequestRejected":
        return Status.REJECTED if current is Status.PENDING else current
    if event == "RequestExpired":
        return Status.EXPIRED if current is Status.PENDING else current
    if event == "RequestCancelled":
        return Status.CANCELLED if current in CANCELLABLE else current
    if event == "GrantScheduled":
        return Status.SCHEDULED if current in (Status.PENDING, Status.APPROVED) else current
    if event == "GrantActivated":
        # A cancelled request whose grant still got created is active until revoked.
        if current in FINAL and current is not Status.CANCELLED:
            return current
        return Status.ACTIVE
    if event == "GrantFailed":
        return Status.ERROR if current not in FINAL else current
    if event == "GrantRevocationFailed":
        if current in FINAL and current is not Status.CANCELLED:
            return current
        return Status.REVOCATION_FAILED
    if event == "GrantEnded":
        if reason not in GRANT_END:
            raise ValueError(f"unknown GrantEnded reason {reason!r}")
        return GRANT_END[reason]
    return current
