"""Which S3 objects audit-ingest may fetch (`ELEVATE_CLOUDTRAIL_SOURCES`).

A notice on the SQS queue names a bucket and keys, and the queue's writers are not
necessarily the trail: a queue policy opened too wide, or a forged SNS message, could
otherwise make audit-ingest read any object its role can read and publish it on
`elevate.cloudtrail.v1`. So every object is checked against the configured sources before
it is fetched.

Format: comma-separated `bucket` (the whole bucket) or `bucket/prefix` entries. A prefix is
whole path segments — `trail/AWSLogs` (or `trail/AWSLogs/`) admits `AWSLogs/…`, never
`AWSLogs-evil/…`. A key with a `.` or `..` segment, literal or percent-encoded, is refused
whatever the sources: CloudTrail never writes one, and a proxy normalising it could fetch
another object than the one that was checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from elevate_core.errors import PermanentError

from elevate_audit_ingest.schemas import ObjectRef

SETTING = "ELEVATE_CLOUDTRAIL_SOURCES"
# S3's bucket naming rules (general purpose buckets): 3-63 of a-z 0-9 . -, alnum at the ends.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENTS = re.compile(r"[/\\]")  # a backslash too: some intermediaries treat it as "/"


@dataclass(frozen=True, slots=True)
class Source:
    bucket: str
    prefix: str = ""  # "" = the whole bucket; else whole segments, ending in "/"

    def __str__(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket


class Refusal(StrEnum):
    """Why an object is not fetched (the `reason` label of the refusal counter)."""

    BUCKET = "bucket"  # the bucket is not listed
    PREFIX = "prefix"  # the bucket is listed, the key is under none of its prefixes
    DOT_SEGMENT = "dot_segment"  # the key has a "." or ".." segment


class SourceNotAllowedError(PermanentError):
    """The notice names an object outside the configured sources: it is not fetched."""

    def __init__(self, reason: Refusal, ref: ObjectRef) -> None:
        self.reason = reason
        super().__init__(_explain(reason, ref))


def _explain(reason: Refusal, ref: ObjectRef) -> str:
    if reason is Refusal.BUCKET:
        why = f"bucket {ref.bucket!r} is not listed in {SETTING}"
    elif reason is Refusal.PREFIX:
        why = f"key is under none of the prefixes {SETTING} lists for bucket {ref.bucket!r}"
    else:
        why = "key has a '.' or '..' path segment"
    return f"{why}; not fetched"


def parse_sources(text: str) -> tuple[Source, ...]:
    """The entries of the setting; ValueError (one line, naming the entry) if malformed."""
    return tuple(_parse_entry(e.strip()) for e in text.split(",") if e.strip())


def _parse_entry(entry: str) -> Source:
    bucket, _, prefix = entry.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{entry!r}: expected bucket or bucket/prefix with an S3 bucket name "
            "(3-63 characters a-z 0-9 . -), without s3://"
        )
    prefix = prefix.rstrip("/")
    if not prefix:
        return Source(bucket)
    segments = prefix.split("/")
    if any(s in ("", ".", "..") for s in segments) or _has_dot_segment(prefix):
        raise ValueError(f"{entry!r}: the prefix has an empty, '.' or '..' path segment")
    return Source(bucket, prefix + "/")


def _has_dot_segment(key: str) -> bool:
    """A "." or ".." segment in the key or in any percent-decoding of it."""
    while True:
        if any(s in (".", "..") for s in _SEGMENTS.split(key)):
            return True
        decoded = unquote(key)
        if decoded == key:  # each round shortens the key, so this ends
            return False
        key = decoded


def refusal(sources: Sequence[Source], ref: ObjectRef) -> Refusal | None:
    """Why `ref` (the exact bucket and key GetObject would be given) may not be fetched
    from `sources`; None when it may."""
    listed = [s for s in sources if s.bucket == ref.bucket]
    if not listed:
        return Refusal.BUCKET
    if _has_dot_segment(ref.key):
        return Refusal.DOT_SEGMENT
    if not any(ref.key.startswith(s.prefix) for s in listed):
        return Refusal.PREFIX
    return None
