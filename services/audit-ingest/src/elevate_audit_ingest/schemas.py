"""The shapes audit-ingest reads: SQS notices and CloudTrail log files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from elevate_core.errors import PermanentError


@dataclass(frozen=True, slots=True)
class ObjectRef:
    bucket: str
    key: str


class NoticeError(PermanentError):
    """The SQS message is not a CloudTrail or S3 notice."""


class LogFileError(PermanentError):
    """The object is not a CloudTrail log file (`{"Records": [...]}`, gzip or plain); it is
    read by `logfile.LogFileReader`."""


def _json(text: str | bytes, what: str, error: type[PermanentError]) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not JSON: {exc}") from None


def parse_notice(body: str) -> list[ObjectRef]:
    """Object references from CloudTrail's SNS notice (wrapped in the SNS envelope or
    raw), or from an S3 event notification (direct or via SNS). A test event → []."""
    data = _json(body, "notice", NoticeError)
    if isinstance(data, dict) and data.get("Type") == "Notification":
        data = _json(str(data.get("Message", "")), "SNS message", NoticeError)
    if not isinstance(data, dict):
        raise NoticeError("notice is not a JSON object")
    if "s3Bucket" in data:
        return _cloudtrail_refs(data)
    if data.get("Event") == "s3:TestEvent":
        return []
    if isinstance(data.get("Records"), list):
        return _s3_event_refs(data["Records"])
    raise NoticeError("neither a CloudTrail notice nor an S3 event notification")


def _cloudtrail_refs(notice: dict[str, Any]) -> list[ObjectRef]:
    keys = notice.get("s3ObjectKey")
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise NoticeError("s3ObjectKey is not a list of keys")
    return [ObjectRef(str(notice["s3Bucket"]), k) for k in keys]


def _s3_event_refs(records: list[Any]) -> list[ObjectRef]:
    """The objects created in an S3 event notification; removals and the like are skipped."""
    refs = []
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            raise NoticeError("Records[] is not an S3 event notification")
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(record["s3"]["object"]["key"])  # keys arrive URL-encoded
        except (KeyError, TypeError):
            raise NoticeError("S3 event without bucket/object") from None
        refs.append(ObjectRef(bucket, key))
    return refs


def is_log_file(key: str) -> bool:
    """CloudTrail log files; digest files (and anything else) are not ingested."""
    return "/CloudTrail-Digest/" not in key and key.endswith((".json.gz", ".json"))
