"""Which grant made a CloudTrail record possible — pure functions, no I/O.

A record belongs to a grant when
- the role's account (from the Identity Center role ARN; `recipientAccountId` is only the
  trail that received the copy) is the grant's account,
- the role is an Identity Center role
  (`…:role/aws-reserved/sso.amazonaws.com/[region/]AWSReservedSSO_<PermissionSet>_<hash>`)
  of the grant's permission set,
- the session name equals the grant's user name (case-insensitive, both cut to 64
  characters, as STS cuts it) or `userIdentity.onBehalfOf.userId` equals its user id,
- and `eventTime` lies in [activation, end], or in (end, end + grace] for a session that
  began (`sessionContext.attributes.creationDate`) at or before the end.
`AssumeRoleWithSAML` sign-ins count: their role and session name come from the request, and
the session begins with them — so a sign-in after the end is never covered.
A record of that person and role after the end that the grant does not cover is OUTLIVED:
access that survived its grant, flagged with the grant it outlived.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard

import orjson
from elevate_core.errors import PermanentError

MAX_SESSION_NAME = 64
SIGN_IN = "AssumeRoleWithSAML"
# Added by the S3/SQS path to each record it publishes; not CloudTrail's, so not content.
DELIVERY_FIELD = "elevateDelivery"
_EMPTY: Mapping[str, Any] = MappingProxyType({})
KEY_EVENT_ID = 180  # eventID characters in a record key: with the digest it fits 255

# Role ARN (sessionIssuer / AssumeRoleWithSAML roleArn): the path proves Identity Center made it.
_IC_ROLE_ARN = re.compile(
    r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/aws-reserved/sso\.amazonaws\.com/"
    r"(?:[a-z0-9-]+/)?AWSReservedSSO_(?P<ps>.+)_(?P<hash>[0-9a-fA-F]{16})$"
)
_ASSUMED_ROLE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/(?P<session>.+)$"
)


class Outcome(StrEnum):
    GRANT = "grant"  # covered by an Elevate grant
    STANDING = "standing"  # covered by a standing (baseline/policy) assignment
    UNCOVERED = "uncovered"  # a managed Identity Center role, nothing covers it
    UNMANAGED = "unmanaged"  # not an Identity Center role (or not a managed permission set)
    OUTLIVED = "outlived-grant"  # the grant's person and role, after its end, not covered


class Outlived(StrEnum):
    """Why a record after a grant's end is not covered by it."""

    SIGN_IN_AFTER_END = "sign-in-after-end"
    SESSION_AFTER_END = "session-began-after-end"
    SESSION_START_UNKNOWN = "session-start-unknown"  # no creationDate: cannot prove it
    BEYOND_GRACE = "beyond-grace"  # a session of the grant still used after end + grace


class RecordError(PermanentError):
    """The record lacks what every CloudTrail record has (eventID, eventTime)."""


class TrailRecord(NamedTuple):
    """What correlation needs from one CloudTrail record (a tuple: one is built for every
    record read, and a frozen dataclass costs five times as much to build)."""

    event_id: str
    event_time: datetime
    event_name: str
    account_id: str | None
    permission_set: str | None  # set only for an Identity Center role
    role_arn: str | None
    session_name: str | None
    on_behalf_of_user_id: str | None
    session_started: datetime | None = None  # the sign-in's eventTime or creationDate
    digest: str = ""  # of the record's content (content_digest)
    raw: Mapping[str, Any] = _EMPTY

    @property
    def is_identity_center(self) -> bool:
        return self.permission_set is not None

    @property
    def key(self) -> str:
        """Deduplication key: the same record twice is one, a reused eventID is not."""
        return f"{self.event_id[:KEY_EVENT_ID]}:{self.digest}"

    @property
    def delivery(self) -> tuple[str, str] | None:
        """(bucket, key) of the log file the S3/SQS path read this record from."""
        found = self.raw.get(DELIVERY_FIELD)
        if not is_mapping(found):
            return None
        bucket, key = found.get("s3Bucket"), found.get("s3ObjectKey")
        return (bucket, key) if isinstance(bucket, str) and isinstance(key, str) else None

    @property
    def is_sign_in(self) -> bool:
        return self.event_name == SIGN_IN


@dataclass(frozen=True, slots=True)
class GrantWindow:
    grant_id: str
    request_id: str
    user_name: str
    user_id: str
    account_id: str
    permission_set_name: str
    start: datetime  # activation
    end: datetime  # the actual end when known, else the scheduled end
    justification: str = ""
    approvers: tuple[str, ...] = ()
    ticket: str | None = None
    break_glass: bool = False

    def until(self, grace: timedelta) -> datetime:
        return self.end + grace


@dataclass(frozen=True, slots=True)
class StandingAccess:
    account_id: str
    permission_set_name: str
    user_id: str
    user_name: str | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    """Another content seen under the same eventID."""

    digest: str
    delivery: str | None  # s3://bucket/key when it came by the S3 path


@dataclass(frozen=True, slots=True)
class Correlation:
    outcome: Outcome
    grant: GrantWindow | None = None  # the covering grant, or the one OUTLIVED
    standing: StandingAccess | None = None
    outlived: Outlived | None = None


def is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # a dict (what JSON decodes to) first: isinstance against the Mapping ABC costs ~0.3 µs
    return type(value) is dict or isinstance(value, Mapping)


def unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """An EventBridge envelope carries the CloudTrail record in `detail`."""
    detail = data.get("detail")
    if "eventID" not in data and is_mapping(detail) and "eventID" in detail:
        return detail
    return data


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise RecordError(f"eventTime missing or not a string: {value!r}")
    return _parse_time(value)


# Records of a second, and every record of a session (creationDate), repeat a time: read
# each once. The caches hold immutable values only (datetimes, strings).
@lru_cache(maxsize=8192)
def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RecordError(f"eventTime {value!r}: {exc}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@lru_cache(maxsize=4096)
def _ic_role(role_arn: str) -> tuple[str, str] | None:
    """(account, permission set) of an Identity Center role ARN, else None."""
    m = _IC_ROLE_ARN.match(role_arn)
    return (m.group("account"), m.group("ps")) if m else None


@lru_cache(maxsize=4096)
def _assumed_session(arn: str) -> str | None:
    """The session name of an assumed-role ARN."""
    m = _ASSUMED_ROLE_ARN.match(arn)
    return m.group("session") if m else None


def _canonical_json(record: Mapping[str, Any]) -> bytes:
    """The digest's original definition: sorted, compact JSON, UTF-8 (lone surrogates, which
    no JSON text decoded by orjson holds and which made it raise, passed through)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def content_digest(data: Mapping[str, Any]) -> str:
    """SHA-256 of the record's content (canonical JSON, delivery metadata left out): two
    records that share an eventID but differ in anything else have different digests.

    The canonical JSON is orjson's sorted compact encoding (a sixth of json.dumps' cost),
    byte for byte the json.dumps(sort_keys, compact, ensure_ascii=False) text the digest was
    first defined on — except for a float Python writes with an exponent of -5 to -9
    (1e-05: orjson writes 0.00001; 1e-07: 1e-7), rare in CloudTrail. Digests are stored
    (dedupe and conflict rows), so a copy of such a record re-delivered across the upgrade
    reads as other content under its eventID: published again and flagged as a conflict.
    What orjson refuses (ints beyond 64 bits, lone surrogates, non-str keys) takes the json
    form, as before. NaN/Infinity, which are not JSON and which orjson.loads never yields,
    would digest as null.
    """
    record = unwrap(data)
    if type(record) is not dict or DELIVERY_FIELD in record:
        record = {k: v for k, v in record.items() if k != DELIVERY_FIELD}
    try:
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        canonical = _canonical_json(record)
    return hashlib.sha256(canonical).hexdigest()


def keyed(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """(record_key, content_digest) of a record, the digest computed once: pass it on to
    parse_record. None without an eventID."""
    event_id = unwrap(data).get("eventID")
    if not isinstance(event_id, str) or not event_id:
        return None
    digest = content_digest(data)
    return f"{event_id[:KEY_EVENT_ID]}:{digest}", digest


def record_key(data: Mapping[str, Any]) -> str | None:
    """The deduplication key: eventID and content digest, so a copy of the same record is
    dropped but another record reusing its eventID is not (fits the 255-character key)."""
    found = keyed(data)
    return None if found is None else found[0]


def digest_of_key(key: str) -> str:
    """The content digest a record_key ends with (for parse_record's `digest`)."""
    return key.rpartition(":")[2]


def _optional_time(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except RecordError:
        return None  # an unreadable creationDate: the session start is unknown


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if is_mapping(value) else _EMPTY


def _sign_in_session(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Role ARN and session name of an `AssumeRoleWithSAML`, from its request/response."""
    params = _mapping(record.get("requestParameters"))
    role_arn, session = params.get("roleArn"), params.get("roleSessionName")
    if session is None:
        assumed = _mapping(_mapping(record.get("responseElements")).get("assumedRoleUser"))
        session = _assumed_session(str(assumed.get("arn", "")))
    return role_arn, session


def _role_session(
    identity: Mapping[str, Any],
) -> tuple[str | None, str | None, datetime | None]:
    """Role ARN, session name and session start of a call made with a role session."""
    context = _mapping(identity.get("sessionContext"))
    role_arn = _mapping(context.get("sessionIssuer")).get("arn")
    created = _optional_time(_mapping(context.get("attributes")).get("creationDate"))
    session = _assumed_session(str(identity.get("arn", "")))
    if session is None and ":" in str(identity.get("principalId", "")):
        session = str(identity["principalId"]).split(":", 1)[1]
    return role_arn, session, created


def parse_record(data: Mapping[str, Any], digest: str | None = None) -> TrailRecord:
    """`digest`: the record's content_digest when already known (keyed, digest_of_key)."""
    record = unwrap(data)
    event_id = record.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise RecordError("eventID missing")
    event_time = parse_time(record.get("eventTime"))
    identity = _mapping(record.get("userIdentity"))
    event_name = str(record.get("eventName") or "")
    role_arn: str | None = None
    session: str | None = None
    started: datetime | None = None
    if event_name == SIGN_IN:
        role_arn, session = _sign_in_session(record)
        started = event_time  # the sign-in is what begins the session
    elif identity.get("type") == "AssumedRole":
        role_arn, session, started = _role_session(identity)
    # a roleArn that is not a string (not CloudTrail's) is no Identity Center role
    role = _ic_role(role_arn) if isinstance(role_arn, str) and role_arn else None
    # The role's own account, not the trail that received this copy: a cross-account call
    # is delivered to the resource owner's trail too, under the same grant.
    account = role[0] if role else (record.get("recipientAccountId") or identity.get("accountId"))
    return TrailRecord(
        event_id=event_id,
        event_time=event_time,
        event_name=event_name,
        account_id=str(account) if account else None,
        permission_set=role[1] if role else None,
        role_arn=role_arn,
        session_name=session,
        on_behalf_of_user_id=_mapping(identity.get("onBehalfOf")).get("userId"),
        session_started=started,
        digest=content_digest(record) if digest is None else digest,
        raw=record,
    )


def session_matches(session_name: str | None, user_name: str | None) -> bool:
    if not session_name or not user_name:
        return False
    cut = user_name[:MAX_SESSION_NAME]
    return session_name[:MAX_SESSION_NAME].casefold() == cut.casefold()


def _same_person(record: TrailRecord, user_name: str | None, user_id: str | None) -> bool:
    if record.on_behalf_of_user_id and user_id and record.on_behalf_of_user_id == user_id:
        return True
    return session_matches(record.session_name, user_name)


def _grant_matches(record: TrailRecord, grant: GrantWindow) -> bool:
    """The grant's account, permission set and person, at or after its activation."""
    return (
        record.permission_set is not None
        and record.account_id == grant.account_id
        and record.permission_set == grant.permission_set_name
        and _same_person(record, grant.user_name, grant.user_id)
        and grant.start <= record.event_time
    )


def _after_end(record: TrailRecord, grant: GrantWindow, grace: timedelta) -> Outlived | None:
    """None when the grant covers this record from after its end, else why it does not."""
    started = record.session_started
    if record.is_sign_in:
        return Outlived.SIGN_IN_AFTER_END
    if started is None:
        return Outlived.SESSION_START_UNKNOWN
    if started > grant.end:
        return Outlived.SESSION_AFTER_END
    if record.event_time > grant.until(grace):
        return Outlived.BEYOND_GRACE
    return None


def grant_covers(record: TrailRecord, grant: GrantWindow, *, grace: timedelta) -> bool:
    if not _grant_matches(record, grant):
        return False
    return record.event_time <= grant.end or _after_end(record, grant, grace) is None


def grant_outlived(record: TrailRecord, grant: GrantWindow, *, grace: timedelta) -> Outlived | None:
    """Why `record` is access that outlived `grant`, or None if it is not.

    Outlived: after the end, not covered, and either within the grace (a sign-in or a
    session begun after the end) or of a session begun inside the grant (any time later).
    """
    if not _grant_matches(record, grant) or record.event_time <= grant.end:
        return None
    reason = _after_end(record, grant, grace)
    if reason is None or record.event_time <= grant.until(grace):
        return reason
    started = record.session_started
    return reason if started is not None and grant.start <= started <= grant.end else None


def standing_covers(record: TrailRecord, access: StandingAccess) -> bool:
    return (
        record.permission_set is not None
        and record.account_id == access.account_id
        and record.permission_set == access.permission_set_name
        and _same_person(record, access.user_name, access.user_id)
    )


def correlate(
    record: TrailRecord,
    grants: Iterable[GrantWindow],
    standing: Iterable[StandingAccess] = (),
    *,
    grace: timedelta,
    managed_permission_sets: frozenset[str] | None = None,
    managed_pairs: frozenset[tuple[str, str]] | None = None,
) -> Correlation:
    """The grant (latest activation first) or standing assignment covering `record`, else
    the grant (latest end) whose access it outlived.

    `managed_permission_sets` None means every Identity Center permission set is managed;
    otherwise an uncovered record in another permission set's role is UNMANAGED (a
    permission set Elevate does not hand out is not its business to flag).
    """
    if not record.is_identity_center or record.account_id is None:
        return Correlation(Outcome.UNMANAGED)
    covering = [g for g in grants if grant_covers(record, g, grace=grace)]
    if covering:
        best = max(covering, key=lambda g: (g.start, g.grant_id))
        return Correlation(Outcome.GRANT, grant=best)
    for access in standing:
        if standing_covers(record, access):
            return Correlation(Outcome.STANDING, standing=access)
    # An Elevate grant's own access living on is flagged whatever the managed scope says.
    outlived = [(g, r) for g in grants if (r := grant_outlived(record, g, grace=grace))]
    if outlived:
        grant, reason = max(outlived, key=lambda pair: (pair[0].end, pair[0].grant_id))
        return Correlation(Outcome.OUTLIVED, grant=grant, outlived=reason)
    if managed_pairs is not None and (record.account_id, record.permission_set) not in (
        managed_pairs
    ):
        return Correlation(Outcome.UNMANAGED)  # the policy hands out no such access
    if managed_permission_sets is not None and record.permission_set not in (
        managed_permission_sets
    ):
        return Correlation(Outcome.UNMANAGED)
    return Correlation(Outcome.UNCOVERED)
