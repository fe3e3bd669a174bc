"""Event ids derived from their cause: the same cause, the same ids; another cause, or
another output of it, another id; outside a cause, random ids."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from elevate_core.causes import caused_by, current_cause, timer_cause_id
from elevate_core.events.envelope import new_envelope
from elevate_core.events.models import DecisionRefused, Person

T = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _ids(cause_id: str, types: list[str]) -> list[str]:
    with caused_by(cause_id, T) as cause:
        return [cause.next_id(t) for t in types]


def test_the_same_cause_gives_the_same_ids_in_the_same_order() -> None:
    types = ["a.v1", "b.v1", "a.v1"]
    first = _ids("ev-1", types)
    assert first == _ids("ev-1", types)
    assert len(set(first)) == 3  # index and type both count
    assert _ids("ev-2", types)[0] != first[0]
    assert current_cause() is None  # the block ended


def test_a_timer_cause_names_the_time_it_was_scheduled_for() -> None:
    a = timer_cause_id("approval.expire", "r1", T)
    assert a == timer_cause_id("approval.expire", "r1", T)
    assert a != timer_cause_id("approval.expire", "r1/2", T)


def test_an_event_without_a_cause_keeps_a_random_id() -> None:
    event = DecisionRefused(
        request_id=uuid4(),
        approver=Person(user_name="bob", user_id="u-bob"),
        reason="request_final",
    )
    one = new_envelope(event, source="t", subject=None)
    two = new_envelope(event, source="t", subject=None)
    assert one.id != two.id
    assert new_envelope(event, source="t", subject=None, id="fixed").id == "fixed"
