"""Which grant made a CloudTrail record possible — pure functions, no I/O.

A record belongs to a grant when
- the account matches (`recipientAccountId`, else `userIdentity.accountId`),
- the role is an Identity Center role
  (`…:role/aws-reserved/sso.amazonaws.com/[region/]AWSReservedSSO_<PermissionSet>_<hash>`)
  of the grant's permission set,
- the session name equals the grant's user name (case-insensitive, both cut to 64
  characters, as STS cuts it) or `userIdentity.onBehalfOf.userId` equals its user id,
- and `eventTime` lies in [activation, end + grace] (both ends inclusive).
`AssumeRoleWithSAML` sign-ins count: their role and session name come from the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from elevate_core.errors import PermanentError

MAX_SESSION_NAME = 64

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


class RecordError(PermanentError):
    """The record lacks what every CloudTrail record has (eventID, eventTime)."""


@dataclass(frozen=True, slots=True)
class TrailRecord:
    """What correlation needs from one CloudTrail record."""

    event_id: str
    event_time: datetime
    event_name: str
    account_id: str | None
    permission_set: str | None  # set only for an Identity Center role
    role_arn: str | None
    session_name: str | None
    on_behalf_of_user_id: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def is_identity_center(self) -> bool:
        return self.permission_set is not None


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
class Correlation:
    outcome: Outcome
    grant: GrantWindow | None = None
    standing: StandingAccess | None = None


def unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """An EventBridge envelope carries the CloudTrail record in `detail`."""
    detail = data.get("detail")
    if isinstance(detail, Mapping) and "eventID" in detail and "eventID" not in data:
        return detail
    return data


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise RecordError(f"eventTime missing or not a string: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RecordError(f"eventTime {value!r}: {exc}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _ic_permission_set(role_arn: str | None) -> str | None:
    if not role_arn:
        return None
    match = _IC_ROLE_ARN.match(role_arn)
    return match.group("ps") if match else None


def parse_record(data: Mapping[str, Any]) -> TrailRecord:
    record = unwrap(data)
    event_id = record.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise RecordError("eventID missing")
    identity = record.get("userIdentity") or {}
    if not isinstance(identity, Mapping):
        identity = {}
    account = record.get("recipientAccountId") or identity.get("accountId")
    event_name = str(record.get("eventName") or "")
    role_arn: str | None = None
    session: str | None = None
    if event_name == "AssumeRoleWithSAML":
        params = record.get("requestParameters") or {}
        if isinstance(params, Mapping):
            role_arn = params.get("roleArn")
            session = params.get("roleSessionName")
        if session is None and isinstance(record.get("responseElements"), Mapping):
            assumed = record["responseElements"].get("assumedRoleUser") or {}
            m = _ASSUMED_ROLE_ARN.match(str(assumed.get("arn", "")))
            session = m.group("session") if m else None
    elif identity.get("type") == "AssumedRole":
        context = identity.get("sessionContext") or {}
        issuer = context.get("sessionIssuer") or {} if isinstance(context, Mapping) else {}
        role_arn = issuer.get("arn") if isinstance(issuer, Mapping) else None
        m = _ASSUMED_ROLE_ARN.match(str(identity.get("arn", "")))
        if m:
            session = m.group("session")
        elif ":" in str(identity.get("principalId", "")):
            session = str(identity["principalId"]).split(":", 1)[1]
    permission_set = _ic_permission_set(role_arn)
    behalf = identity.get("onBehalfOf") or {}
    return TrailRecord(
        event_id=event_id,
        event_time=parse_time(record.get("eventTime")),
        event_name=event_name,
        account_id=str(account) if account else None,
        permission_set=permission_set,
        role_arn=role_arn,
        session_name=session,
        on_behalf_of_user_id=behalf.get("userId") if isinstance(behalf, Mapping) else None,
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


def grant_covers(record: TrailRecord, grant: GrantWindow, *, grace: timedelta) -> bool:
    return (
        record.permission_set is not None
        and record.account_id == grant.account_id
        and record.permission_set == grant.permission_set_name
        and _same_person(record, grant.user_name, grant.user_id)
        and grant.start <= record.event_time <= grant.until(grace)
    )


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
    """The grant (latest activation first) or standing assignment covering `record`.

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
    if managed_pairs is not None and (record.account_id, record.permission_set) not in (
        managed_pairs
    ):
        return Correlation(Outcome.UNMANAGED)  # the policy hands out no such access
    if managed_permission_sets is not None and record.permission_set not in (
        managed_permission_sets
    ):
        return Correlation(Outcome.UNMANAGED)
    return Correlation(Outcome.UNCOVERED)
