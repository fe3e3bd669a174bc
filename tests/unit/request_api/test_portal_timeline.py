"""The request page's four steps, from the read model's timeline entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from elevate_request_api.portal.timeline import steps

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class E:
    at: datetime
    status: str


def _entries(*statuses: str) -> list[E]:
    return [E(T0 + timedelta(minutes=i), s) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("status", "history", "expected"),
    [
        (
            "pending",
            ["pending"],
            [("Requested", "done", 0), ("Approved", "now"), ("Active", "next"), ("Ended", "next")],
        ),
        (
            "approved",
            ["pending", "approved"],
            [
                ("Requested", "done", 0),
                ("Approved", "done", 1),
                ("Active", "now"),
                ("Ended", "next"),
            ],
        ),
        (
            "active",
            ["pending", "pending", "approved", "active"],
            [
                ("Requested", "done", 0),
                ("Approved", "done", 2),
                ("Active", "done", 3),
                ("Ended", "now"),
            ],
        ),
        (
            "revoked",
            ["pending", "approved", "active", "active", "revoked"],
            [
                ("Requested", "done", 0),
                ("Approved", "done", 1),
                ("Active", "done", 2),
                ("Revoked", "done", 4),
            ],
        ),
        (
            "rejected",
            ["pending", "rejected"],
            [
                ("Requested", "done", 0),
                ("Approved", "skipped"),
                ("Active", "skipped"),
                ("Rejected", "done", 1),
            ],
        ),
        (
            "cancelled",
            ["pending", "approved", "cancelled"],
            [
                ("Requested", "done", 0),
                ("Approved", "done", 1),
                ("Active", "skipped"),
                ("Cancelled", "done", 2),
            ],
        ),
        (  # break-glass: active at once, no approval step of its own
            "active",
            ["active"],
            [
                ("Requested", "done", 0),
                ("Approved", "done", 0),
                ("Active", "done", 0),
                ("Ended", "now"),
            ],
        ),
        (
            "revocation_failed",
            ["pending", "approved", "active", "revocation_failed"],
            [
                ("Requested", "done", 0),
                ("Approved", "done", 1),
                ("Active", "done", 2),
                ("Ended", "now"),
            ],
        ),
    ],
)
def test_each_step_is_done_with_its_time_now_or_to_come(
    status: str, history: list[str], expected: list[tuple[object, ...]]
) -> None:
    got = steps(status, _entries(*history))
    assert [
        (s.label, s.state, int((s.at - T0).total_seconds() // 60)) if s.at else (s.label, s.state)
        for s in got
    ] == expected
