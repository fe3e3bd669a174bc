"""Correlation, table-tested with realistic CloudTrail records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elevate_audit_ingest.domain import (
    DELIVERY_FIELD,
    GrantWindow,
    Outcome,
    Outlived,
    RecordError,
    StandingAccess,
    content_digest,
    correlate,
    digest_of_key,
    grant_outlived,
    keyed,
    parse_record,
    record_key,
    session_matches,
    unwrap,
)
from elevate_local.simulate_activity import call_record, role_arn, sign_in_record

CORPUS = Path(__file__).parent / "corpus"
ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
PS = "AdministratorAccess"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
GRACE = timedelta(hours=1)
LONG_NAME = "firstname.middlename.lastname.with.a.very.long.suffix@subsidiary.example.com"
assert len(LONG_NAME) > 64


def grant(
    user_name: str = "alice", user_id: str = "uid-alice", account: str = ACCOUNT
) -> GrantWindow:
    return GrantWindow(
        grant_id=f"g-{user_name}-{account}",
        request_id=f"r-{user_name}-{account}",
        user_name=user_name,
        user_id=user_id,
        account_id=account,
        permission_set_name=PS,
        start=START,
        end=END,
        justification="INC-42: database failover",
        approvers=("bob",),
    )


GRANTS = [grant(), grant("Erin", "uid-erin"), grant(LONG_NAME, "uid-long")]
STANDING = [StandingAccess(ACCOUNT, "ReadOnlyAccess", "uid-carol", "carol")]


def cli(user: str, at: datetime, **kw: Any) -> dict[str, Any]:
    kw.setdefault("account_id", ACCOUNT)
    kw.setdefault("permission_set", PS)
    return call_record(
        user=user, at=at, event_source="ec2.amazonaws.com", event_name="DescribeInstances", **kw
    )


def console(user: str, at: datetime, **kw: Any) -> dict[str, Any]:
    kw.setdefault("account_id", ACCOUNT)
    kw.setdefault("permission_set", PS)
    return call_record(
        user=user,
        at=at,
        event_source="s3.amazonaws.com",
        event_name="ListBuckets",
        console=True,
        **kw,
    )


def saml(user: str, at: datetime, **kw: Any) -> dict[str, Any]:
    kw.setdefault("account_id", ACCOUNT)
    kw.setdefault("permission_set", PS)
    return sign_in_record(user=user, at=at, **kw)


def iam_user_record(at: datetime) -> dict[str, Any]:
    record = cli("alice", at)
    record["userIdentity"] = {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "accountId": ACCOUNT,
        "userName": "alice",
    }
    return record


def impostor_role_record(at: datetime) -> dict[str, Any]:
    """A self-made role named like Identity Center's, but not under aws-reserved/sso."""
    record = cli("alice", at)
    issuer = record["userIdentity"]["sessionContext"]["sessionIssuer"]
    issuer["arn"] = f"arn:aws:iam::{ACCOUNT}:role/AWSReservedSSO_{PS}_0123456789abcdef"
    return record


def regional_path_record(at: datetime) -> dict[str, Any]:
    record = cli("alice", at)
    issuer = record["userIdentity"]["sessionContext"]["sessionIssuer"]
    issuer["arn"] = role_arn(ACCOUNT, PS, region="eu-west-1")
    return record


def on_behalf_record(at: datetime) -> dict[str, Any]:
    # The session name is not the user name, but onBehalfOf names the user id.
    return cli("alice.archer", at, on_behalf_of_user_id="uid-alice")


def eventbridge(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": record["eventTime"],
        "region": "us-east-1",
        "resources": [],
        "detail": record,
    }


def cross_account_copy(record: dict[str, Any]) -> dict[str, Any]:
    """The copy CloudTrail delivers to the resource owner's trail: its own eventID, the
    owner as recipient, the caller's sharedEventID."""
    return {
        **record,
        "eventID": "c0c0c0c0-0000-4000-8000-000000000001",
        "recipientAccountId": OTHER_ACCOUNT,
        "sharedEventID": record["eventID"],
    }


SECOND = timedelta(seconds=1)
CASES: list[tuple[str, dict[str, Any], Outcome, str | None]] = [
    (
        "cli call inside the window",
        cli("alice", START + timedelta(minutes=5)),
        Outcome.GRANT,
        "alice",
    ),
    ("console call", console("alice", START + timedelta(minutes=30)), Outcome.GRANT, "alice"),
    ("AssumeRoleWithSAML sign-in", saml("alice", START + SECOND), Outcome.GRANT, "alice"),
    ("at activation exactly", cli("alice", START), Outcome.GRANT, "alice"),
    ("just before activation", cli("alice", START - SECOND), Outcome.UNCOVERED, None),
    ("at the end", cli("alice", END), Outcome.GRANT, "alice"),
    (
        "inside the grace, session begun before the end",
        cli("alice", END + GRACE - SECOND, session_start=END - timedelta(minutes=5)),
        Outcome.GRANT,
        "alice",
    ),
    (
        "end of the grace, session begun at the end",
        cli("alice", END + GRACE, session_start=END),
        Outcome.GRANT,
        "alice",
    ),
    (
        "just after the grace, session begun before the end",
        cli("alice", END + GRACE + SECOND, session_start=END - SECOND),
        Outcome.OUTLIVED,
        "alice",
    ),
    (
        "inside the grace, session begun after the end",
        cli("alice", END + timedelta(minutes=10), session_start=END + SECOND),
        Outcome.OUTLIVED,
        "alice",
    ),
    ("sign-in at the end", saml("alice", END), Outcome.GRANT, "alice"),
    (
        "sign-in ten minutes after the end",
        saml("alice", END + timedelta(minutes=10)),
        Outcome.OUTLIVED,
        "alice",
    ),
    (
        "after the grace, session begun after the end",
        cli("alice", END + GRACE + SECOND),
        Outcome.UNCOVERED,
        None,
    ),
    (
        "session begun before activation, call inside the window",
        cli("alice", START + SECOND, session_start=START - timedelta(hours=1)),
        Outcome.GRANT,
        "alice",
    ),
    (
        "another user after the end",
        cli("mallory", END + SECOND, session_start=END - SECOND),
        Outcome.UNCOVERED,
        None,
    ),
    (
        "cross-account copy in the resource owner's trail",
        cross_account_copy(cli("alice", START + SECOND)),
        Outcome.GRANT,
        "alice",
    ),
    (
        "cross-account copy of a call after the end",
        cross_account_copy(cli("alice", END + SECOND)),
        Outcome.OUTLIVED,
        "alice",
    ),
    ("mixed-case session name", cli("ALICE", START + SECOND), Outcome.GRANT, "alice"),
    ("mixed-case user name in grant", cli("erin", START + SECOND), Outcome.GRANT, "Erin"),
    ("64-char truncated session", cli(LONG_NAME, START + SECOND), Outcome.GRANT, LONG_NAME),
    ("truncated SAML sign-in", saml(LONG_NAME.upper(), START + SECOND), Outcome.GRANT, LONG_NAME),
    ("onBehalfOf user id", on_behalf_record(START + SECOND), Outcome.GRANT, "alice"),
    ("another user in the same role", cli("mallory", START + SECOND), Outcome.UNCOVERED, None),
    (
        "same user in another account",
        cli("alice", START + SECOND, account_id=OTHER_ACCOUNT),
        Outcome.UNCOVERED,
        None,
    ),
    (
        "same user, another permission set",
        cli("alice", START + SECOND, permission_set="PowerUserAccess"),
        Outcome.UNCOVERED,
        None,
    ),
    (
        "standing assignment's user",
        console("carol", START + timedelta(days=3), permission_set="ReadOnlyAccess"),
        Outcome.STANDING,
        None,
    ),
    (
        "standing user outside the standing permission set",
        cli("carol", START + SECOND),
        Outcome.UNCOVERED,
        None,
    ),
    ("IAM user, not Identity Center", iam_user_record(START + SECOND), Outcome.UNMANAGED, None),
    (
        "role named like SSO outside aws-reserved",
        impostor_role_record(START),
        Outcome.UNMANAGED,
        None,
    ),
    ("regional aws-reserved path", regional_path_record(START + SECOND), Outcome.GRANT, "alice"),
    ("EventBridge envelope", eventbridge(cli("alice", START + SECOND)), Outcome.GRANT, "alice"),
]


@pytest.mark.parametrize(
    ("record", "outcome", "user"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_correlation_table(record: dict[str, Any], outcome: Outcome, user: str | None) -> None:
    parsed = parse_record(record)
    result = correlate(parsed, GRANTS, STANDING, grace=GRACE)
    assert result.outcome is outcome
    assert (result.grant.user_name if result.grant else None) == user
    if outcome is Outcome.STANDING:
        assert result.standing == STANDING[0]


def test_sign_in_takes_role_and_session_from_the_request() -> None:
    parsed = parse_record(saml("alice", START))
    assert parsed.event_name == "AssumeRoleWithSAML"
    assert parsed.permission_set == PS
    assert parsed.session_name == "alice"
    assert parsed.account_id == ACCOUNT


def test_permission_set_names_with_underscores() -> None:
    parsed = parse_record(cli("alice", START, permission_set="Data_Admin_EU"))
    assert parsed.permission_set == "Data_Admin_EU"


def test_unmanaged_permission_set_is_not_flagged() -> None:
    parsed = parse_record(cli("mallory", START, permission_set="SupportUser"))
    managed = frozenset({PS})
    result = correlate(parsed, GRANTS, STANDING, grace=GRACE, managed_permission_sets=managed)
    assert result.outcome is Outcome.UNMANAGED
    parsed = parse_record(cli("mallory", START))
    result = correlate(parsed, GRANTS, STANDING, grace=GRACE, managed_permission_sets=managed)
    assert result.outcome is Outcome.UNCOVERED


def test_overlapping_grants_pick_the_latest_activation() -> None:
    later = replace(grant(), grant_id="g2", request_id="r2", start=START + timedelta(minutes=10))
    result = correlate(
        parse_record(cli("alice", START + timedelta(minutes=20))), [grant(), later], grace=GRACE
    )
    assert result.grant is not None
    assert result.grant.request_id == "r2"


def test_revoked_early_grant_ends_at_revocation_plus_grace() -> None:
    revoked_at = START + timedelta(minutes=10)
    g = replace(grant(), end=revoked_at)
    inside = parse_record(cli("alice", revoked_at + GRACE, session_start=revoked_at))
    outside = parse_record(cli("alice", revoked_at + GRACE + SECOND))
    assert correlate(inside, [g], grace=GRACE).outcome is Outcome.GRANT
    assert correlate(outside, [g], grace=GRACE).outcome is Outcome.UNCOVERED


@pytest.mark.parametrize(
    ("session", "user", "expected"),
    [
        ("alice", "alice", True),
        ("Alice", "aLICE", True),
        (LONG_NAME[:64], LONG_NAME, True),
        (LONG_NAME[:63], LONG_NAME, False),
        ("alice2", "alice", False),
        (None, "alice", False),
    ],
)
def test_session_name_rule(session: str | None, user: str, expected: bool) -> None:
    assert session_matches(session, user) is expected


def test_records_without_id_or_time_are_refused() -> None:
    record = cli("alice", START)
    with pytest.raises(RecordError):
        parse_record({**record, "eventID": None})
    with pytest.raises(RecordError):
        parse_record({**record, "eventTime": "yesterday"})


def test_unwrap_leaves_plain_records() -> None:
    record = cli("alice", START)
    assert unwrap(record) is record
    assert unwrap(eventbridge(record)) == record


OUTLIVED_CASES: list[tuple[str, dict[str, Any], Outlived | None]] = [
    ("call before the end", cli("alice", END - SECOND, session_start=START), None),
    ("session of the grant, in the grace", cli("alice", END + SECOND, session_start=END), None),
    ("sign-in after the end", saml("alice", END + SECOND), Outlived.SIGN_IN_AFTER_END),
    (
        "session begun after the end",
        cli("alice", END + timedelta(minutes=2), session_start=END + SECOND),
        Outlived.SESSION_AFTER_END,
    ),
    (
        "session of the grant, past the grace",
        cli("alice", END + GRACE + SECOND, session_start=START + SECOND),
        Outlived.BEYOND_GRACE,
    ),
    (
        "session begun after the end, past the grace: no longer this grant's",
        cli("alice", END + GRACE + SECOND, session_start=END + SECOND),
        None,
    ),
    ("another person", cli("mallory", END + SECOND, session_start=END + SECOND), None),
]


@pytest.mark.parametrize(
    ("record", "reason"), [c[1:] for c in OUTLIVED_CASES], ids=[c[0] for c in OUTLIVED_CASES]
)
def test_why_access_outlived_its_grant(record: dict[str, Any], reason: Outlived | None) -> None:
    assert grant_outlived(parse_record(record), grant(), grace=GRACE) is reason


def test_a_session_without_creation_date_is_not_covered_after_the_end() -> None:
    record = cli("alice", END + SECOND, session_start=START)
    del record["userIdentity"]["sessionContext"]["attributes"]["creationDate"]
    result = correlate(parse_record(record), GRANTS, grace=GRACE)
    assert (result.outcome, result.outlived) == (Outcome.OUTLIVED, Outlived.SESSION_START_UNKNOWN)
    # ... but before the end the window alone decides
    inside = cli("alice", END - SECOND)
    del inside["userIdentity"]["sessionContext"]["attributes"]["creationDate"]
    assert correlate(parse_record(inside), GRANTS, grace=GRACE).outcome is Outcome.GRANT


def test_a_standing_assignment_covers_what_a_grant_outlived() -> None:
    standing = [StandingAccess(ACCOUNT, PS, "uid-alice", "alice")]
    record = parse_record(saml("alice", END + timedelta(minutes=10)))
    assert correlate(record, GRANTS, standing, grace=GRACE).outcome is Outcome.STANDING


def test_outlived_is_flagged_outside_the_managed_scope() -> None:
    record = parse_record(saml("alice", END + timedelta(minutes=10)))
    result = correlate(record, GRANTS, grace=GRACE, managed_pairs=frozenset())
    assert result.outcome is Outcome.OUTLIVED
    assert result.grant is not None
    assert result.grant.request_id == grant().request_id


@pytest.mark.parametrize(
    ("recipient", "identity_account"),
    [(OTHER_ACCOUNT, ACCOUNT), (OTHER_ACCOUNT, OTHER_ACCOUNT), (None, None)],
    ids=["cross-account copy", "forged identity account", "no recipient"],
)
def test_the_account_is_the_roles_own(recipient: str | None, identity_account: str | None) -> None:
    record = cli("alice", START)
    record["recipientAccountId"] = recipient
    record["userIdentity"]["accountId"] = identity_account
    assert parse_record(record).account_id == ACCOUNT


def test_the_account_of_a_sign_in_is_its_roles() -> None:
    record = saml("alice", START)
    record["recipientAccountId"] = OTHER_ACCOUNT
    assert parse_record(record).account_id == ACCOUNT


def test_the_session_start_of_a_sign_in_is_the_sign_in() -> None:
    assert parse_record(saml("alice", END)).session_started == END
    started = START + timedelta(minutes=3)
    assert parse_record(cli("alice", END, session_start=started)).session_started == started


def test_record_key_covers_the_content() -> None:
    genuine = cli("alice", START)
    forged = {**genuine, "sourceIPAddress": "198.51.100.66"}
    delivered = {**genuine, DELIVERY_FIELD: {"s3Bucket": "trail", "s3ObjectKey": "a.json.gz"}}
    assert record_key(genuine) != record_key(forged)
    assert str(record_key(forged)).startswith(genuine["eventID"] + ":")
    # the same record by another path is the same record
    assert record_key(genuine) == record_key(eventbridge(genuine)) == record_key(delivered)
    assert parse_record(genuine).key == record_key(genuine)
    assert record_key({**genuine, "eventID": None}) is None


def test_a_long_event_id_still_fits_the_key() -> None:
    record = {**cli("alice", START), "eventID": "x" * 300}
    key = record_key(record)
    assert key is not None
    assert len(key) <= 255
    assert key == parse_record(record).key


# Digests are stored (dedupe and conflict rows): the orjson encoding must digest as the
# json canonical form the digest was first defined on.
def _json_digest(data: dict[str, Any]) -> str:
    record = {k: v for k, v in unwrap(data).items() if k != DELIVERY_FIELD}
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _corpus_records() -> list[dict[str, Any]]:
    return [
        case["record"]
        for path in sorted(CORPUS.glob("*.json"))
        for case in json.loads(path.read_text()).get("cases", ())
        if "record" in case
    ]


ODD_CONTENT: list[Any] = [
    "ünïcødé ключ 😀 \u2028\u2029 \ufeff",
    '\x00\x01\x1f\x7f " \\ / \b\f\n\r\t',
    [[], [[1, "a"], {}], [None, True, False]],
    {"z": 1, "a": {"é": 1, "e": 2, "😀": 3, "\uffff": 4, "Z": 5}},
    2**63 - 1,
    -(2**63),
    2**64 - 1,  # orjson's largest
    0,
    -1.5,
    1e16,
    1e-10,
    0.1,
    True,
    False,
    None,
]


@pytest.mark.parametrize("record", _corpus_records(), ids=lambda r: str(unwrap(r)["eventID"]))
def test_the_digest_of_each_corpus_record_is_the_json_canonical_one(record: dict[str, Any]) -> None:
    assert content_digest(record) == _json_digest(record)


@pytest.mark.parametrize("value", ODD_CONTENT, ids=repr)
def test_the_digest_of_odd_content_is_the_json_canonical_one(value: Any) -> None:
    record = {**cli("alice", START), "requestParameters": {"v": value, "ключ": [value]}}
    assert content_digest(record) == _json_digest(record)


@pytest.mark.parametrize("value", [10**30, -(10**30), 2**64], ids=str)
def test_what_orjson_refuses_digests_as_before(value: int) -> None:
    record = {**cli("alice", START), "requestParameters": {"n": value}}
    assert content_digest(record) == _json_digest(record)


def test_a_lone_surrogate_digests_where_it_used_to_raise() -> None:
    record = {**cli("alice", START), "userAgent": "\ud800"}
    assert len(content_digest(record)) == 64
    with pytest.raises(UnicodeEncodeError):
        _json_digest(record)


def test_only_small_floats_with_an_exponent_digest_otherwise() -> None:
    # documented: a record re-delivered across the upgrade with such a float is other content
    record = {**cli("alice", START), "requestParameters": {"f": 1e-05}}
    assert content_digest(record) != _json_digest(record)


def test_the_key_and_the_parsed_record_share_one_digest() -> None:
    record = eventbridge({**cli("alice", START), DELIVERY_FIELD: {"s3Bucket": "b"}})
    found = keyed(record)
    assert found is not None
    key, digest = found
    assert key == record_key(record)
    assert digest == content_digest(record)
    assert digest_of_key(key) == digest
    assert parse_record(record, digest=digest) == parse_record(record)
    assert parse_record(record, digest=digest).key == key
    assert keyed({"eventID": ""}) is None


@pytest.mark.parametrize("role", [["arn:aws:iam::1:role/x"], 12, None, ""], ids=repr)
def test_a_role_arn_that_is_no_string_is_no_identity_center_role(role: object) -> None:
    record = saml("alice", START)
    record["requestParameters"]["roleArn"] = role
    assert not parse_record(record).is_identity_center


def test_times_and_roles_read_from_the_caches_are_the_same() -> None:
    first, again = parse_record(cli("alice", START)), parse_record(cli("alice", START))
    assert (first.event_time, first.permission_set, first.session_name) == (
        again.event_time,
        again.permission_set,
        again.session_name,
    )
    with pytest.raises(RecordError):  # a refusal is not cached as a value
        parse_record({**cli("alice", START), "eventTime": "yesterday"})
    with pytest.raises(RecordError):
        parse_record({**cli("alice", START), "eventTime": "yesterday"})
