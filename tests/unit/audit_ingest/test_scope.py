"""The managed scope from the policy decides which uncovered activity is flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from elevate_audit_ingest.domain import Outcome, correlate, parse_record
from elevate_local.simulate_activity import call_record

AT = datetime(2026, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (None, Outcome.UNCOVERED),  # scope unknown yet: every Identity Center role counts
        (frozenset({("111111111111", "AdministratorAccess")}), Outcome.UNCOVERED),
        (frozenset({("111111111111", "ReadOnlyAccess")}), Outcome.UNMANAGED),
        (frozenset({("222222222222", "AdministratorAccess")}), Outcome.UNMANAGED),
        (frozenset(), Outcome.UNMANAGED),
    ],
)
def test_uncovered_activity_is_flagged_only_inside_the_managed_scope(
    pairs: frozenset[tuple[str, str]] | None, expected: Outcome
) -> None:
    record = parse_record(
        call_record(
            user="mallory",
            account_id="111111111111",
            permission_set="AdministratorAccess",
            at=AT,
            event_source="ec2.amazonaws.com",
            event_name="TerminateInstances",
            read_only=False,
        )
    )
    outcome = correlate(record, [], [], grace=timedelta(hours=1), managed_pairs=pairs).outcome
    assert outcome is expected
