"""Notices and log files as CloudTrail and S3 deliver them."""

from __future__ import annotations

import json

import pytest
from elevate_audit_ingest.schemas import (
    NoticeError,
    ObjectRef,
    is_log_file,
    parse_notice,
)
from elevate_audit_ingest.settings import AuditSettings
from elevate_local.simulate_activity import sns_notice

KEY = (
    "AWSLogs/111122223333/CloudTrail/us-east-1/2026/03/02/"
    "111122223333_CloudTrail_us-east-1_20260302T0930Z_abc.json.gz"
)


def s3_event(key: str, name: str = "ObjectCreated:Put") -> dict[str, object]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": name,
                "s3": {"bucket": {"name": "trail"}, "object": {"key": key, "size": 1}},
            }
        ]
    }


def test_cloudtrail_sns_envelope() -> None:
    assert parse_notice(sns_notice("trail", [KEY, KEY + "2"])) == [
        ObjectRef("trail", KEY),
        ObjectRef("trail", KEY + "2"),
    ]


def test_raw_message_delivery() -> None:
    body = json.dumps({"s3Bucket": "trail", "s3ObjectKey": [KEY]})
    assert parse_notice(body) == [ObjectRef("trail", KEY)]
    one_key = json.dumps({"s3Bucket": "trail", "s3ObjectKey": KEY})
    assert parse_notice(one_key) == [ObjectRef("trail", KEY)]


def test_s3_event_notification_keys_are_url_decoded() -> None:
    body = json.dumps(s3_event("AWSLogs/o-abc%3D/x+y.json.gz"))
    assert parse_notice(body) == [ObjectRef("trail", "AWSLogs/o-abc=/x y.json.gz")]


def test_s3_event_via_sns_and_test_events() -> None:
    wrapped = json.dumps({"Type": "Notification", "Message": json.dumps(s3_event(KEY))})
    assert parse_notice(wrapped) == [ObjectRef("trail", KEY)]
    assert parse_notice(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert parse_notice(json.dumps(s3_event(KEY, "ObjectRemoved:Delete"))) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "notice is not JSON"),
        ("[]", "not a JSON object"),
        ('{"hello": 1}', "neither a CloudTrail notice nor an S3 event"),
        ('{"s3Bucket": "b", "s3ObjectKey": 5}', "s3ObjectKey is not a list"),
        ('{"s3Bucket": "b", "s3ObjectKey": ["k", 5]}', "s3ObjectKey is not a list"),
        ('{"Records": [{"eventSource": "aws:sqs"}]}', "not an S3 event notification"),
        ('{"Records": [7]}', "not an S3 event notification"),
        (
            '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}',
            "S3 event without bucket/object",
        ),
        ('{"Type": "Notification", "Message": "{"}', "SNS message is not JSON"),
    ],
)
def test_malformed_notices(body: str, message: str) -> None:
    with pytest.raises(NoticeError, match=message):
        parse_notice(body)


def test_digest_files_are_not_log_files() -> None:
    assert is_log_file(KEY)
    assert not is_log_file("AWSLogs/1/CloudTrail-Digest/us-east-1/2026/03/02/x.json.gz")
    assert not is_log_file("AWSLogs/1/CloudTrail/us-east-1/2026/03/02/x.txt")


def test_settings() -> None:
    settings = AuditSettings(
        mode="test", managed_permission_sets=" AdministratorAccess, PowerUserAccess"
    )
    assert settings.managed() == frozenset({"AdministratorAccess", "PowerUserAccess"})
    assert AuditSettings(mode="test").managed() is None
