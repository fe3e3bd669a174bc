"""The read model's status machine, table-tested (ARCHITECTURE.md §2)."""

from __future__ import annotations

import pytest
from elevate_request_api.status import Status, after_event

S = Status


@pytest.mark.parametrize(
    ("current", "event", "reason", "expected"),
    [
        (S.PENDING, "RequestApproved", None, S.APPROVED),
        (S.APPROVED, "GrantScheduled", None, S.SCHEDULED),
        (S.PENDING, "GrantScheduled", None, S.SCHEDULED),
        (S.SCHEDULED, "GrantActivated", None, S.ACTIVE),
        (S.APPROVED, "GrantActivated", None, S.ACTIVE),
        (S.ACTIVE, "GrantEnded", "expired", S.ENDED),
        (S.ACTIVE, "GrantEnded", "revoked", S.REVOKED),
        (S.ACTIVE, "GrantEnded", "cancelled", S.CANCELLED),
        (S.ACTIVE, "GrantEnded", "drift", S.REVOKED),
        (S.PENDING, "RequestRejected", None, S.REJECTED),
        (S.PENDING, "RequestExpired", None, S.EXPIRED),
        (S.PENDING, "RequestCancelled", None, S.CANCELLED),
        (S.SCHEDULED, "RequestCancelled", None, S.CANCELLED),
        (S.APPROVED, "GrantFailed", None, S.ERROR),
        (S.ACTIVE, "GrantRevocationFailed", None, S.REVOCATION_FAILED),
        (S.REVOCATION_FAILED, "GrantRevocationFailed", None, S.REVOCATION_FAILED),
        (S.REVOCATION_FAILED, "GrantEnded", "expired", S.ENDED),
        # Late or replayed events never move a settled request backwards.
        (S.REJECTED, "RequestApproved", None, S.REJECTED),
        (S.APPROVED, "RequestExpired", None, S.APPROVED),
        (S.ENDED, "GrantActivated", None, S.ENDED),
        (S.ENDED, "GrantRevocationFailed", None, S.ENDED),
        (S.ACTIVE, "GrantScheduled", None, S.ACTIVE),
        (S.ACTIVE, "RequestCancelled", None, S.ACTIVE),
        (S.CANCELLED, "RequestApproved", None, S.CANCELLED),
        # A cancel that lost the race with activation: the access exists, show it.
        (S.CANCELLED, "GrantActivated", None, S.ACTIVE),
        (S.PENDING, "DecisionRecorded", None, S.PENDING),
        (S.PENDING, "BreakGlassUsed", None, S.PENDING),
    ],
)
def test_transitions(current: Status, event: str, reason: str | None, expected: Status) -> None:
    assert after_event(current, event, reason=reason) is expected


def test_unknown_end_reason_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown GrantEnded reason"):
        after_event(S.ACTIVE, "GrantEnded", reason="because")
