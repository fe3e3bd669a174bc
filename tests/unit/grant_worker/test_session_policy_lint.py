"""The inline policies the session cut writes pass parliament, the IAM policy linter (it
checks structure, effects and the value types of the global condition keys such as
`aws:TokenIssueTime`; with `Action: "*"` it does not look up service keys, so
`identitystore:userId` needs no ignore entry)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elevate_grant_worker.sessions import Cut, merge, statement

with warnings.catch_warnings():  # parliament imports pkg_resources, which warns
    warnings.simplefilter("ignore")
    from parliament import analyze_policy_string  # type: ignore[import-untyped]

T0 = datetime(2026, 12, 2, 9, 30, 15, tzinfo=UTC)
OPERATORS = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "ReadLogs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::audit-logs/*",
        }
    ],
}


def findings(text: str) -> list[tuple[str, Any]]:
    policy = analyze_policy_string(text)
    return [(f.issue, f.detail) for f in policy.findings]


def _cut(user: str, account: str, hours: int = 2) -> Cut:
    return Cut(user, account, T0, T0 + timedelta(hours=hours))


@pytest.mark.parametrize(
    ("current", "cuts"),
    [
        (None, [_cut("u-1", "111122223333")]),
        (json.dumps(OPERATORS), [_cut("u-1", "111122223333", 12)]),
        (None, [_cut(f"u-{i}", f"1111222233{i:02d}") for i in range(20)]),
    ],
    ids=["one-cut", "merged-with-the-operators", "twenty-cuts"],
)
def test_generated_policies_pass_the_linter(current: str | None, cuts: list[Cut]) -> None:
    text = merge(current, cuts, now=T0).text
    assert text is not None
    assert findings(text) == []


def test_the_linter_catches_a_broken_cut() -> None:
    """The check above can fail: a cut whose issue time is no date is flagged."""
    broken = statement(_cut("u-1", "111122223333"))
    broken["Condition"]["DateLessThan"]["aws:TokenIssueTime"] = "before the removal"
    text = json.dumps({"Version": "2012-10-17", "Statement": [broken]})
    assert [issue for issue, _ in findings(text)] == ["MISMATCHED_TYPE"]
