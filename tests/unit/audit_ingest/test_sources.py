"""ELEVATE_CLOUDTRAIL_SOURCES: which objects a notice may make audit-ingest fetch."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from elevate_audit_ingest.schemas import ObjectRef, parse_notice
from elevate_audit_ingest.settings import AuditSettings
from elevate_audit_ingest.sources import (
    Refusal,
    Source,
    SourceNotAllowedError,
    parse_sources,
    refusal,
)
from elevate_core.errors import ConfigurationError
from elevate_core.settings import load_settings

from tests.unit.production import set_production_env

KEY = (
    "AWSLogs/111122223333/CloudTrail/us-east-1/2026/03/02/"
    "111122223333_CloudTrail_us-east-1_20260302T0930Z_abc.json.gz"
)
SOURCES = parse_sources("trail/AWSLogs, org-trail/logs/o-abc123/, whole-bucket")


@pytest.mark.parametrize(
    ("bucket", "key", "expected"),
    [
        # listed
        ("trail", KEY, None),
        ("org-trail", "logs/o-abc123/AWSLogs/1/CloudTrail/x.json.gz", None),
        ("whole-bucket", "anything/at/all.json.gz", None),
        ("whole-bucket", KEY, None),
        # unlisted buckets, including near misses
        ("other", KEY, Refusal.BUCKET),
        ("trail-evil", KEY, Refusal.BUCKET),
        ("Trail", KEY, Refusal.BUCKET),
        ("trail/AWSLogs", KEY, Refusal.BUCKET),
        ("", KEY, Refusal.BUCKET),
        # a listed bucket, a key outside its prefix (whole segments only)
        ("trail", "AWSLogs-evil/" + KEY.removeprefix("AWSLogs/"), Refusal.PREFIX),
        ("trail", "AWSLogsX", Refusal.PREFIX),
        ("trail", "AWSLogs", Refusal.PREFIX),
        ("trail", "awslogs/" + KEY.removeprefix("AWSLogs/"), Refusal.PREFIX),
        ("trail", "/" + KEY, Refusal.PREFIX),
        ("trail", "secrets/db.json.gz", Refusal.PREFIX),
        ("org-trail", "logs/o-abc1234/x.json.gz", Refusal.PREFIX),
        ("org-trail", "logs/x.json.gz", Refusal.PREFIX),
        # another bucket's prefix does not count
        ("trail", "logs/o-abc123/x.json.gz", Refusal.PREFIX),
        # dot segments, literal or percent-encoded (at any depth), even in a whole bucket
        ("trail", "AWSLogs/../secrets/db.json.gz", Refusal.DOT_SEGMENT),
        ("trail", "AWSLogs/./x.json.gz", Refusal.DOT_SEGMENT),
        ("trail", "AWSLogs/..", Refusal.DOT_SEGMENT),
        ("trail", "AWSLogs/%2e%2e/secrets/db.json.gz", Refusal.DOT_SEGMENT),
        ("trail", "AWSLogs/%2E%2E%2Fsecrets/db.json.gz", Refusal.DOT_SEGMENT),
        ("trail", "AWSLogs/%252e%252e/secrets/db.json.gz", Refusal.DOT_SEGMENT),
        ("trail", "AWSLogs\\..\\secrets\\db.json.gz", Refusal.DOT_SEGMENT),
        ("whole-bucket", "../x.json.gz", Refusal.DOT_SEGMENT),
        # dots inside a segment are ordinary characters
        ("trail", "AWSLogs/1/..x/a..b/.hidden.json.gz", None),
    ],
)
def test_matching(bucket: str, key: str, expected: Refusal | None) -> None:
    assert refusal(SOURCES, ObjectRef(bucket, key)) == expected


def test_no_sources_refuse_everything() -> None:
    assert refusal((), ObjectRef("trail", KEY)) is Refusal.BUCKET


def test_url_encoded_s3_event_keys_are_judged_decoded() -> None:
    """S3 event notifications URL-encode keys: the decoded key (the one GetObject gets)
    is what must lie under the prefix."""

    def notice(key: str) -> str:
        record = {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "trail"}, "object": {"key": quote_plus(key, safe="")}},
        }
        return json.dumps({"Records": [record]})

    sources = parse_sources("trail/AWSLogs")
    [ok] = parse_notice(notice(KEY))
    assert refusal(sources, ok) is None
    [escape] = parse_notice(notice("AWSLogs/../secrets/db.json.gz"))
    assert escape.key == "AWSLogs/../secrets/db.json.gz"
    assert refusal(sources, escape) is Refusal.DOT_SEGMENT
    [sibling] = parse_notice(notice("AWSLogs-evil/x.json.gz"))
    assert refusal(sources, sibling) is Refusal.PREFIX


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        (" , ", ()),
        ("trail", (Source("trail"),)),
        ("trail/", (Source("trail"),)),
        ("trail/AWSLogs", (Source("trail", "AWSLogs/"),)),
        ("trail/AWSLogs/", (Source("trail", "AWSLogs/"),)),
        (
            " a.b-c/x/y , trail ",
            (Source("a.b-c", "x/y/"), Source("trail")),
        ),
    ],
)
def test_parsing(text: str, expected: tuple[Source, ...]) -> None:
    assert parse_sources(text) == expected


BAD_BUCKET = "expected bucket or bucket/prefix"
BAD_PREFIX = "the prefix has an empty, '.' or '..' path segment"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://trail/AWSLogs", BAD_BUCKET),
        ("Trail", BAD_BUCKET),
        ("tr", BAD_BUCKET),
        ("trail_logs", BAD_BUCKET),
        ("-trail", BAD_BUCKET),
        ("trail..x", BAD_BUCKET),
        ("ok-bucket, bad bucket", BAD_BUCKET),
        ("trail//AWSLogs", BAD_PREFIX),
        ("trail/AWSLogs//x", BAD_PREFIX),
        ("trail/AWSLogs/../x", BAD_PREFIX),
        ("trail/./AWSLogs", BAD_PREFIX),
        ("trail/%2e%2e/x", BAD_PREFIX),
    ],
)
def test_malformed_entries_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_sources(text)


def test_the_refusal_says_why_and_that_nothing_was_fetched() -> None:
    error = SourceNotAllowedError(Refusal.BUCKET, ObjectRef("other", KEY))
    assert str(error) == "bucket 'other' is not listed in ELEVATE_CLOUDTRAIL_SOURCES; not fetched"
    prefix = SourceNotAllowedError(Refusal.PREFIX, ObjectRef("trail", "x"))
    assert "none of the prefixes ELEVATE_CLOUDTRAIL_SOURCES lists for bucket 'trail'" in str(prefix)


# ---- the setting, validated at start ----


@pytest.fixture
def prod_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A production environment that is valid but for the setting under test."""
    for key in list(os.environ):
        if key.startswith("ELEVATE_"):
            monkeypatch.delenv(key)
    set_production_env(monkeypatch, tmp_path)
    return monkeypatch


def test_production_refuses_to_start_without_sources(prod_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings(AuditSettings)
    message = str(err.value)
    assert message.startswith("ELEVATE_CLOUDTRAIL_SOURCES: list the trail's bucket")
    assert "\n" not in message


def test_production_with_sources_or_without_s3_ingest_starts(
    prod_env: pytest.MonkeyPatch,
) -> None:
    prod_env.setenv("ELEVATE_CLOUDTRAIL_SOURCES", "trail/AWSLogs")
    assert load_settings(AuditSettings).sources() == (Source("trail", "AWSLogs/"),)
    prod_env.delenv("ELEVATE_CLOUDTRAIL_SOURCES")
    prod_env.setenv("ELEVATE_CLOUDTRAIL_QUEUE", "")  # nothing is fetched at all
    assert load_settings(AuditSettings).sources() == ()


def test_a_malformed_entry_stops_the_process_naming_the_setting(
    prod_env: pytest.MonkeyPatch,
) -> None:
    prod_env.setenv("ELEVATE_MODE", "test")
    prod_env.setenv("ELEVATE_CLOUDTRAIL_SOURCES", "trail/AWSLogs,s3://other")
    with pytest.raises(ConfigurationError) as err:
        load_settings(AuditSettings)
    assert str(err.value).startswith("ELEVATE_CLOUDTRAIL_SOURCES: 's3://other': expected")
    assert "\n" not in str(err.value)


def test_dev_and_test_may_leave_it_empty() -> None:
    assert AuditSettings(mode="dev").sources() == ()
    assert AuditSettings(mode="test").sources() == ()
