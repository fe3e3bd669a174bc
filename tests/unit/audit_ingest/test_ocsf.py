"""OCSF mapping: Security Lake's CloudTrail field mapping, Elevate's context, validation."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from elevate_audit_ingest import ocsf
from elevate_audit_ingest.domain import (
    DELIVERY_FIELD,
    Conflict,
    Correlation,
    GrantWindow,
    Outcome,
    Outlived,
    StandingAccess,
    parse_record,
)
from elevate_audit_ingest.enrichments import WHITESPACE
from elevate_local.simulate_activity import call_record, sign_in_record

ACCOUNT = "111122223333"
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
GRANT = GrantWindow(
    grant_id="0b8f1c56-0000-4000-8000-000000000001",
    request_id="5d7e2f00-0000-4000-8000-000000000002",
    user_name="alice",
    user_id="uid-alice",
    account_id=ACCOUNT,
    permission_set_name="AdministratorAccess",
    start=AT - timedelta(minutes=30),
    end=AT + timedelta(hours=1),
    justification="INC-42: failover",
    approvers=("bob", "grace"),
    ticket="INC-42",
)


def record(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "user": "alice",
        "account_id": ACCOUNT,
        "permission_set": "AdministratorAccess",
        "at": AT,
        "event_source": "ec2.amazonaws.com",
        "event_name": "TerminateInstances",
        "read_only": False,
        "request_parameters": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}},
    }
    base.update(kw)
    return call_record(**base)  # type: ignore[arg-type]


def test_api_activity_maps_like_security_lake() -> None:
    raw = record()
    raw["resources"] = [
        {"ARN": "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc", "type": "AWS::EC2::Instance"}
    ]
    parsed = parse_record(raw)
    doc = ocsf.api_activity(
        parsed, Correlation(Outcome.GRANT, grant=GRANT), grace_until=GRANT.until(timedelta(hours=1))
    )
    identity = raw["userIdentity"]
    assert isinstance(identity, dict)
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"]) == (6003, 6, 4)
    assert doc["type_uid"] == 600304
    assert doc["severity_id"] == 1
    assert doc["time"] == int(AT.timestamp() * 1000)
    assert doc["metadata"]["original_event_uid"] == raw["eventID"]
    assert doc["metadata"]["uid"] == f"{raw['eventID']}:{parsed.digest[:32]}"
    assert doc["metadata"]["log_source"] == "kafka"
    assert doc["metadata"]["product"]["name"] == "CloudTrail"
    assert doc["metadata"]["version"] == "1.7.0"
    assert doc["actor"]["user"]["uid"] == identity["arn"]
    assert doc["actor"]["user"]["uid_alt"] == identity["principalId"]
    assert doc["actor"]["user"]["credential_uid"] == identity["accessKeyId"]
    assert doc["actor"]["session"]["issuer"] == identity["sessionContext"]["sessionIssuer"]["arn"]
    assert doc["api"]["operation"] == "TerminateInstances"
    assert doc["api"]["service"]["name"] == "ec2.amazonaws.com"
    assert doc["api"]["request"]["uid"] == raw["requestID"]
    assert doc["src_endpoint"]["ip"] == "203.0.113.10"
    assert doc["http_request"]["user_agent"] == raw["userAgent"]
    assert doc["cloud"]["region"] == "us-east-1"
    assert doc["cloud"]["account"]["uid"] == ACCOUNT
    assert doc["resources"][0]["uid"].endswith("instance/i-0abc")
    # Elevate's context
    assert doc["metadata"]["correlation_uid"] == GRANT.request_id
    (enrichment,) = doc["enrichments"]
    assert enrichment["name"] == "elevate.grant"
    assert enrichment["data"]["justification"] == "INC-42: failover"
    assert enrichment["data"]["approvers"] == ["bob", "grace"]
    assert enrichment["data"]["window_start"] == GRANT.start.isoformat()
    assert enrichment["data"]["window_end"] == GRANT.end.isoformat()


def test_uncovered_activity_is_high_severity() -> None:
    parsed = parse_record(record(user="mallory", event_name="ListBuckets"))
    doc = ocsf.api_activity(parsed, Correlation(Outcome.UNCOVERED))
    assert doc["severity_id"] == 4
    assert doc["activity_id"] == 2
    assert "correlation_uid" not in doc["metadata"]
    assert doc["enrichments"][0]["data"]["session_name"] == "mallory"
    assert doc["metadata"]["labels"] == ["elevate:uncovered"]


def test_standing_and_failed_calls() -> None:
    parsed = parse_record(record(user="carol", error_code="AccessDenied"))
    access = StandingAccess(ACCOUNT, "AdministratorAccess", "uid-carol", "carol")
    doc = ocsf.api_activity(parsed, Correlation(Outcome.STANDING, standing=access))
    assert doc["status_id"] == 2
    assert doc["api"]["response"]["error"] == "AccessDenied"
    assert doc["enrichments"][0]["name"] == "elevate.standing"


def test_optional_cloudtrail_fields_are_mapped_when_present() -> None:
    raw = record(error_code="AccessDenied", session_start=AT - timedelta(minutes=5))
    identity = raw["userIdentity"]
    assert isinstance(identity, dict)
    identity["invokedBy"] = "cloudformation.amazonaws.com"
    identity["identityProvider"] = "idp-1"
    identity["sessionContext"]["attributes"]["mfaAuthenticated"] = "TRUE"
    raw |= {"vpcEndpointId": "vpce-1", "apiVersion": "2016-11-15", "responseElements": {"a": 1}}
    doc = ocsf.api_activity(
        parse_record(raw), Correlation(Outcome.GRANT, grant=GRANT), processed_at=AT
    )
    assert doc["actor"]["invoked_by"] == "cloudformation.amazonaws.com"
    assert doc["actor"]["idp"] == {"name": "idp-1"}
    assert doc["actor"]["session"]["is_mfa"] is True
    assert doc["actor"]["session"]["created_time"] == ocsf.millis(AT - timedelta(minutes=5))
    assert doc["actor"]["session"]["credential_uid"] == identity["accessKeyId"]
    assert doc["src_endpoint"]["uid"] == "vpce-1"
    assert doc["api"]["version"] == "2016-11-15"
    assert doc["api"]["response"] == {
        "data": {"a": 1},
        "error": "AccessDenied",
        "error_message": "User is not authorized to perform TerminateInstances",
    }
    assert doc["status_code"] == "AccessDenied"
    assert doc["metadata"]["event_code"] == "AwsApiCall"
    assert doc["metadata"]["processed_time"] == ocsf.millis(AT)
    assert doc["message"] == f"TerminateInstances by alice under Elevate request {GRANT.request_id}"


def test_a_bare_record_maps_to_the_minimum() -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_X_{'0' * 16}"
    bare = {
        "eventTime": "2026-03-02T09:30:00Z",
        "eventName": "GetThing",
        "eventID": "e-1",
        "userIdentity": {"type": "AssumedRole", "sessionContext": {"sessionIssuer": {"arn": role}}},
        "resources": [{"type": "no ARN"}, "junk"],
    }
    doc = ocsf.api_activity(parse_record(bare), Correlation(Outcome.UNCOVERED))
    assert doc["actor"] == {
        "user": {"type": "AssumedRole", "type_id": 99},
        "session": {"issuer": role},
    }
    assert doc["api"] == {
        "operation": "GetThing",
        "service": {"name": ""},
        "request": {"uid": "e-1"},
    }
    assert doc["src_endpoint"] == {}
    for absent in ("status_code", "http_request", "resources"):
        assert absent not in doc
    assert "no Elevate grant or standing assignment covers it" in doc["message"]


def test_sign_in_from_a_service_principal_host() -> None:
    raw = sign_in_record(
        user="alice", account_id=ACCOUNT, permission_set="AdministratorAccess", at=AT
    )
    raw["sourceIPAddress"] = "sso.amazonaws.com"
    doc = ocsf.api_activity(parse_record(raw), Correlation(Outcome.GRANT, grant=GRANT))
    assert doc["src_endpoint"] == {"domain": "sso.amazonaws.com"}
    assert doc["actor"]["user"]["type"] == "SAMLUser"
    assert doc["actor"]["session"]["issuer"].endswith(
        "sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_"
        + doc["actor"]["session"]["issuer"][-16:]
    )


@pytest.mark.parametrize(("activity", "name"), [(1, "Assign Privileges"), (2, "Revoke Privileges")])
def test_user_access_management(activity: int, name: str) -> None:
    doc = ocsf.user_access(
        GRANT,
        activity=activity,
        at=AT,
        event_uid="ce-1",
        permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
    )
    assert (doc["class_uid"], doc["category_uid"], doc["type_uid"]) == (3005, 3, 300500 + activity)
    assert doc["activity_name"] == name
    assert doc["user"] == {"name": "alice", "uid": "uid-alice", "type": "User", "type_id": 1}
    assert doc["privileges"] == ["AdministratorAccess"]
    assert doc["metadata"]["correlation_uid"] == GRANT.request_id
    assert doc["resource"]["uid"] == ACCOUNT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api": None}, "api"),
        ({"unknown_attribute": 1}, "outside OCSF"),
        ({"type_uid": 600399}, "type_uid"),
        ({"class_uid": 1234}, "unsupported"),
    ],
)
def test_validation_refuses_what_ocsf_does_not_allow(
    change: dict[str, object], message: str
) -> None:
    doc = ocsf.api_activity(parse_record(record()), Correlation(Outcome.GRANT, grant=GRANT))
    broken = {**doc, **change}
    broken = {k: v for k, v in broken.items() if v is not None}
    with pytest.raises(ocsf.OcsfValidationError, match=message):
        ocsf.validate_ocsf(broken)


def test_nested_unknown_attribute_is_refused() -> None:
    doc = ocsf.api_activity(parse_record(record()), Correlation(Outcome.GRANT, grant=GRANT))
    doc["actor"]["user"]["favourite_colour"] = "blue"
    with pytest.raises(ocsf.OcsfValidationError, match=r"actor\.user\.favourite_colour"):
        ocsf.validate_ocsf(doc)


@pytest.mark.parametrize(
    ("name", "activity"),
    [
        ("CreateBucket", 1),
        ("GetObject", 2),
        ("ListRoles", 2),
        ("PutBucketPolicy", 3),
        ("DeleteUser", 4),
        ("AssumeRoleWithSAML", 99),
        ("ConsoleLogin", 99),
    ],
)
def test_activity_from_event_name(name: str, activity: int) -> None:
    assert ocsf.activity_for(name) == activity


def test_access_that_outlived_its_grant_is_high_severity_with_the_request() -> None:
    after = GRANT.end + timedelta(minutes=10)
    raw = sign_in_record(
        user="alice", account_id=ACCOUNT, permission_set="AdministratorAccess", at=after
    )
    correlation = Correlation(Outcome.OUTLIVED, grant=GRANT, outlived=Outlived.SIGN_IN_AFTER_END)
    grace_until = GRANT.until(timedelta(hours=1))
    doc = ocsf.api_activity(parse_record(raw), correlation, grace_until=grace_until)
    assert doc["severity_id"] == 4
    assert doc["metadata"]["labels"] == ["elevate:outlived-grant"]
    assert doc["metadata"]["correlation_uid"] == GRANT.request_id
    grant, outlived = doc["enrichments"]
    assert grant["name"] == "elevate.grant"
    assert outlived["name"] == "elevate.outlived-grant"
    assert outlived["value"] == GRANT.grant_id
    assert outlived["data"] == {
        "request_id": GRANT.request_id,
        "grant_id": GRANT.grant_id,
        "window_end": GRANT.end.isoformat(),
        "window_grace_until": grace_until.isoformat(),
        "reason": "sign-in-after-end",
        "session_created": after.isoformat(),
        "event_time": after.isoformat(),
    }
    assert "outlived the grant" in doc["message"]


def test_a_reused_event_id_is_flagged_and_kept_apart() -> None:
    genuine = parse_record(record())
    forged = parse_record({**record(), "eventID": genuine.event_id, "sourceIPAddress": "1.2.3.4"})
    other = Conflict(digest=genuine.digest, delivery="s3://trail/AWSLogs/x.json.gz")
    doc = ocsf.api_activity(forged, Correlation(Outcome.GRANT, grant=GRANT), conflicts=[other])
    plain = ocsf.api_activity(genuine, Correlation(Outcome.GRANT, grant=GRANT))
    assert doc["metadata"]["uid"] != plain["metadata"]["uid"]  # a SIEM keeps both
    assert doc["metadata"]["original_event_uid"] == plain["metadata"]["original_event_uid"]
    assert doc["severity_id"] == 4
    assert doc["metadata"]["labels"] == ["elevate:grant", "elevate:event-id-conflict"]
    conflict = doc["enrichments"][-1]
    assert conflict["name"] == "elevate.event-id-conflict"
    assert conflict["data"]["digest"] == forged.digest
    assert conflict["data"]["others"] == [
        {"digest": genuine.digest, "delivery": "s3://trail/AWSLogs/x.json.gz"}
    ]


def test_the_log_file_a_record_was_read_from_is_named() -> None:
    key = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/03/02/f.json.gz"
    raw = {**record(), DELIVERY_FIELD: {"s3Bucket": "acme-trail", "s3ObjectKey": key}}
    doc = ocsf.api_activity(parse_record(raw), Correlation(Outcome.UNCOVERED))
    assert doc["metadata"]["log_source"] == f"s3://acme-trail/{key}"
    delivery = doc["enrichments"][-1]
    assert delivery["name"] == "elevate.delivery"
    assert delivery["data"] == {"path": "s3", "bucket": "acme-trail", "key": key}


def test_the_uid_of_a_very_long_event_id_fits_a_readers_dedupe_key() -> None:
    doc = ocsf.api_activity(
        parse_record(record(user="mallory") | {"eventID": "e" * 400}),
        Correlation(Outcome.UNCOVERED),
    )
    assert len(doc["metadata"]["uid"]) <= 255
    assert doc["metadata"]["original_event_uid"] == "e" * 400


def test_an_unreadable_creation_date_maps_as_an_unknown_session_start() -> None:
    raw = record(user="mallory")
    identity = raw["userIdentity"]
    assert isinstance(identity, dict)
    identity["sessionContext"]["attributes"]["creationDate"] = "Mar 2, 2026, 9:05:00 AM"
    doc = ocsf.api_activity(parse_record(raw), Correlation(Outcome.UNCOVERED))
    assert "created_time" not in doc["actor"]["session"]
    assert doc["actor"]["session"]["is_mfa"] is False


# The service emits the mappers' output unvalidated: it must be what validation returns.
PADDING = " \u3000\x0b"  # what the models strip (Unicode White_Space) …
KEPT = "\x1c"  # … and what they keep, though str.isspace() says it is whitespace


def _padded(value: object) -> object:
    if isinstance(value, dict):
        return {k: _padded(v) for k, v in value.items()}
    return f"{PADDING}{value}{KEPT}{PADDING}" if isinstance(value, str) else value


def test_strings_are_stripped_as_validation_strips_them() -> None:
    raw = record(error_code="AccessDenied")
    for name in ("userAgent", "eventSource", "errorCode", "errorMessage", "awsRegion"):
        raw[name] = _padded(raw[name])
    raw["sourceIPAddress"] = _padded("ec2.amazonaws.com")
    raw["userIdentity"] = {**raw["userIdentity"], "invokedBy": _padded("ec2.amazonaws.com")}  # type: ignore[dict-item]
    raw["resources"] = [{"ARN": _padded("arn:aws:ec2:x"), "type": _padded("AWS::EC2::Instance")}]
    doc = ocsf.api_activity(parse_record(raw), Correlation(Outcome.GRANT, grant=GRANT))
    assert ocsf.validate_ocsf(doc) == doc
    assert doc["http_request"]["user_agent"] == str(raw["userAgent"]).strip(WHITESPACE)
    assert doc["status_code"] == f"AccessDenied{KEPT}"
    assert doc["resources"] == [
        {"uid": _padded("arn:aws:ec2:x"), "type": f"AWS::EC2::Instance{KEPT}"}  # uid: kept
    ]


@pytest.mark.parametrize(
    ("kind", "type_id"),
    [("SAMLUser", 99), ("Unknown", 0), ("user", 1), ("SERVICE", 4), (" User", 99), (None, 0)],
)
def test_the_actor_type_id_is_what_validation_derives_from_the_label(
    kind: str | None, type_id: int
) -> None:
    raw = sign_in_record(
        user="alice", account_id=ACCOUNT, permission_set="AdministratorAccess", at=AT
    )
    raw["userIdentity"] = {**raw["userIdentity"], "type": kind}
    doc = ocsf.api_activity(parse_record(raw), Correlation(Outcome.GRANT, grant=GRANT))
    assert doc["actor"]["user"]["type_id"] == type_id
    assert ocsf.validate_ocsf(doc) == doc


@pytest.mark.parametrize("break_glass", [False, True])
def test_user_access_is_what_validation_returns(break_glass: bool) -> None:
    grant = dataclasses.replace(GRANT, break_glass=break_glass)
    for activity in (ocsf.ASSIGN, ocsf.REVOKE):
        doc = ocsf.user_access(
            grant,
            activity=activity,
            at=AT,
            event_uid=f"{PADDING}ce-1{PADDING}",
            reason="ended",
        )
        assert ocsf.validate_ocsf(doc) == doc


def test_validation_does_not_change_the_document_it_is_given() -> None:
    # the models fill labels into nested dicts: comparing with the input must mean something
    doc = ocsf.api_activity(parse_record(record()), Correlation(Outcome.GRANT, grant=GRANT))
    del doc["actor"]["user"]["type_id"], doc["cloud"]["account"]["type"]
    before = json.loads(json.dumps(doc))
    validated = ocsf.validate_ocsf(doc)
    assert doc == before
    assert validated["actor"]["user"]["type_id"] == 99
    assert validated["cloud"]["account"]["type"] == "AWS Account"


def test_encode_is_the_json_value_the_compact_json_encoding_gave() -> None:
    doc = ocsf.api_activity(parse_record(record()), Correlation(Outcome.GRANT, grant=GRANT))
    doc["api"]["request"]["data"] = {"ключ": 'знач\u2028\x00"\\', "n": [1, 2.5, None, True]}
    encoded = ocsf.encode(doc)
    old = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    assert json.loads(encoded) == json.loads(old) == doc
    # compact, in the mapper's (fixed) key order: only non-ASCII is written as UTF-8
    assert encoded == json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
