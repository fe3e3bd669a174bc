"""The session cut's statements and how they merge into a permission set's inline policy,
against hand-written expected JSON (moto does not evaluate IAM conditions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from elevate_grant_worker.sessions import (
    INLINE_POLICY_LIMIT,
    Cut,
    ForeignPolicyError,
    PolicyTooLargeError,
    expiry_of,
    merge,
    session_duration,
    statement,
)

T0 = datetime(2026, 12, 2, 9, 30, 15, 250_000, tzinfo=UTC)
ALICE = "906754a1c2-1111-2222-3333-444455556666"
BOB = "906754a1c2-aaaa-bbbb-cccc-ddddeeeeffff"
FOREIGN = {
    "Version": "2012-10-17",
    "Id": "operators-own",
    "Statement": [
        {"Sid": "ReadLogs", "Effect": "Allow", "Action": "logs:Get*", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:*", "Resource": "*"},
    ],
}


def cut(user: str = ALICE, account: str = "111122223333", at: datetime = T0, hours: int = 4) -> Cut:
    return Cut(user, account, at, at + timedelta(hours=hours))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            cut(),
            {
                "Sid": "ElevateCut20261202133016381aedc5ce8183af",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "identitystore:userId": ALICE,
                        "aws:PrincipalAccount": "111122223333",
                    },
                    "DateLessThan": {"aws:TokenIssueTime": "2026-12-02T09:30:15Z"},
                },
            },
        ),
        (
            cut(BOB, "444455556666", datetime(2026, 12, 31, 23, 0, tzinfo=UTC), hours=12),
            {
                "Sid": "ElevateCut202701011100006538fc7357c85d90",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "identitystore:userId": BOB,
                        "aws:PrincipalAccount": "444455556666",
                    },
                    "DateLessThan": {"aws:TokenIssueTime": "2026-12-31T23:00:00Z"},
                },
            },
        ),
    ],
    ids=["alice-4h-rounded", "bob-12h-new-year"],
)
def test_statement_per_case(case: Cut, expected: dict[str, object]) -> None:
    """Expiry rounded up to the second, issue time down; the key is the first 16 hex
    digits of SHA-256(user id, newline, account)."""
    assert statement(case) == expected
    expiry = expiry_of(expected["Sid"])
    assert expiry is not None
    assert expiry >= case.expires_at


def test_an_existing_policy_keeps_its_statements_in_order_and_the_cut_is_appended() -> None:
    merged = merge(json.dumps(FOREIGN, indent=2), [cut()], now=T0)
    assert merged.changed
    assert merged.text is not None
    doc = json.loads(merged.text)
    assert (doc["Id"], doc["Version"]) == ("operators-own", "2012-10-17")
    assert doc["Statement"][:2] == FOREIGN["Statement"]
    assert doc["Statement"][2] == statement(cut())
    assert merged.next_expiry == expiry_of(statement(cut())["Sid"])


def test_nothing_to_change_leaves_the_policy_untouched() -> None:
    text = json.dumps(FOREIGN, indent=4)
    assert merge(text, [], now=T0).changed is False
    with_cut = merge(text, [cut()], now=T0).text
    again = merge(with_cut, [cut()], now=T0 + timedelta(minutes=1))
    assert again.changed is False
    assert again.text == with_cut


def test_a_later_cut_of_the_same_user_and_account_replaces_the_earlier() -> None:
    first = merge(None, [cut()], now=T0).text
    later = cut(at=T0 + timedelta(minutes=30))
    doc = json.loads(merge(first, [later], now=T0 + timedelta(minutes=30)).text or "")
    assert doc["Statement"] == [statement(later)]
    other = merge(first, [cut(account="999988887777")], now=T0).text
    assert len(json.loads(other or "")["Statement"]) == 2


def test_expired_statements_go_and_an_only_elevate_policy_is_deleted() -> None:
    text = merge(json.dumps(FOREIGN), [cut(hours=1), cut(BOB, hours=4)], now=T0).text
    after_one = merge(text, [], now=T0 + timedelta(hours=2))
    doc = json.loads(after_one.text or "")
    assert doc["Statement"][:2] == FOREIGN["Statement"]
    assert [
        s["Condition"]["StringEquals"]["identitystore:userId"] for s in doc["Statement"][2:]
    ] == [BOB]
    gone = merge(after_one.text, [], now=T0 + timedelta(hours=5))
    assert json.loads(gone.text or "") == FOREIGN
    alone = merge(merge(None, [cut()], now=T0).text, [], now=T0 + timedelta(hours=5))
    assert (alone.changed, alone.text) == (True, None)  # delete the inline policy


def test_refused_before_the_size_limit() -> None:
    big = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Big", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "x" * 32_400}
        ],
    }
    assert len(json.dumps(big, separators=(",", ":"))) < INLINE_POLICY_LIMIT
    with pytest.raises(PolicyTooLargeError, match="32768"):
        merge(json.dumps(big), [cut()], now=T0)


@pytest.mark.parametrize("text", ["{not json", '{"Version": "2012-10-17"}', "[1]"])
def test_a_policy_elevate_cannot_read_is_refused(text: str) -> None:
    with pytest.raises(ForeignPolicyError):
        merge(text, [cut()], now=T0)


def test_a_statement_that_only_looks_like_elevates_is_the_operators() -> None:
    lookalike = {"Sid": "ElevateCutSomething", "Effect": "Deny", "Action": "*", "Resource": "*"}
    doc = {"Version": "2012-10-17", "Statement": [lookalike]}
    later = T0 + timedelta(days=400)
    assert json.loads(merge(json.dumps(doc), [], now=later).text or "") == doc


@pytest.mark.parametrize(
    ("iso", "hours"), [("PT1H", 1), ("PT12H", 12), ("PT2H30M", 2.5), (None, 1)]
)
def test_session_duration(iso: str | None, hours: float) -> None:
    assert session_duration(iso) == timedelta(hours=hours)
