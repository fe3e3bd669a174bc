"""Pure decisions of the session cut (no I/O; callers pass `now`).

Deleting an Identity Center assignment leaves the role sessions already issued with it
working until the permission set's session duration runs out. AWS's documented cut is a
Deny in the permission set's inline policy on the user (`identitystore:userId`, stable
across renames), the account (`aws:PrincipalAccount`: the permission set's role exists in
every account it is provisioned to) and `aws:TokenIssueTime` before the removal — so a
later grant's sessions, issued after the cut, work at once.

Elevate's statements are recognised by their `Sid`: `ElevateCut<expiry><key>`, the expiry
as `YYYYMMDDhhmmss` (UTC) and a key naming the (user, account): everything needed to
remove a statement once no session it denies can still be alive is in the policy itself,
so removal survives restarts and a lost database row. Every other statement is the
operator's: kept equal and in order; when Elevate changes nothing the policy is not
written at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from elevate_core.errors import PermanentError

SID_PREFIX = "ElevateCut"
INLINE_POLICY_LIMIT = 32_768  # characters, AWS's limit for a permission set's inline policy
LONGEST_SESSION = timedelta(hours=12)  # AWS's longest permission set session duration
_SID = re.compile(rf"^{SID_PREFIX}(?P<expiry>\d{{14}})(?P<key>[0-9a-f]{{16}})$")
_EXPIRY = "%Y%m%d%H%M%S"
_DURATION = re.compile(r"^PT(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?$")


class PolicyTooLargeError(PermanentError):
    """The permission set's inline policy would exceed AWS's limit with Elevate's cut."""


class ForeignPolicyError(PermanentError):
    """The permission set's inline policy is not a JSON policy Elevate can merge into."""


@dataclass(frozen=True, slots=True)
class Cut:
    """Deny `user_id`'s sessions in `account_id` issued before `cut_at`, until `expires_at`
    (the cut plus the permission set's session duration: no such session outlives it)."""

    user_id: str
    account_id: str
    cut_at: datetime
    expires_at: datetime

    @property
    def key(self) -> str:
        return cut_key(self.user_id, self.account_id)


def cut_key(user_id: str, account_id: str) -> str:
    return hashlib.sha256(f"{user_id}\n{account_id}".encode()).hexdigest()[:16]


def session_duration(iso: str | None) -> timedelta:
    """A permission set's `SessionDuration` (ISO 8601, PT1H to PT12H; AWS's default PT1H)."""
    match = _DURATION.match(iso or "PT1H")
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"not an ISO 8601 session duration: {iso!r}")
    h, m, s = (int(match.group(g) or 0) for g in ("h", "m", "s"))
    return timedelta(hours=h, minutes=m, seconds=s)


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def sid(cut: Cut) -> str:
    # Rounded up to the second: the statement never goes before its last session does.
    expiry = _utc(cut.expires_at)
    if expiry.microsecond:
        expiry = expiry.replace(microsecond=0) + timedelta(seconds=1)
    return f"{SID_PREFIX}{expiry.strftime(_EXPIRY)}{cut.key}"


def expiry_of(statement_sid: object) -> datetime | None:
    """The expiry an Elevate `Sid` encodes; None for anybody else's statement."""
    match = _SID.match(statement_sid) if isinstance(statement_sid, str) else None
    if match is None:
        return None
    return datetime.strptime(match.group("expiry"), _EXPIRY).replace(tzinfo=UTC)


def statement(cut: Cut) -> dict[str, Any]:
    """The Deny for one cut."""
    issued_before = _utc(cut.cut_at).replace(microsecond=0)
    return {
        "Sid": sid(cut),
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringEquals": {
                "identitystore:userId": cut.user_id,
                "aws:PrincipalAccount": cut.account_id,
            },
            # Rounded down: a session issued in the cut's own second is denied too.
            "DateLessThan": {"aws:TokenIssueTime": issued_before.strftime("%Y-%m-%dT%H:%M:%SZ")},
        },
    }


def _key_of(stmt: dict[str, Any]) -> str | None:
    equals = stmt.get("Condition", {}).get("StringEquals", {})
    user, account = equals.get("identitystore:userId"), equals.get("aws:PrincipalAccount")
    return cut_key(user, account) if isinstance(user, str) and isinstance(account, str) else None


def parse(text: str | None) -> dict[str, Any] | None:
    """The inline policy as parsed JSON (None: the permission set has none)."""
    if not text or not text.strip():
        return None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ForeignPolicyError(f"the inline policy is not JSON: {exc}") from exc
    statements = document.get("Statement") if isinstance(document, dict) else None
    if not isinstance(statements, (list, dict)):
        raise ForeignPolicyError("the inline policy has no Statement")
    return dict(document)


def _statements(document: dict[str, Any] | None) -> list[Any]:
    if document is None:
        return []
    found = document["Statement"]
    return list(found) if isinstance(found, list) else [found]


@dataclass(frozen=True, slots=True)
class Merged:
    changed: bool
    text: str | None  # the policy to write; None (when changed): delete the inline policy
    next_expiry: datetime | None  # when an Elevate statement here is next due to go


def merge(current: str | None, cuts: Iterable[Cut], *, now: datetime) -> Merged:
    """The inline policy with `cuts` added and Elevate's expired statements removed.

    Per (user, account) one statement stays: the one that denies the most (the latest
    cut, which also expires last). Raises PolicyTooLargeError before the AWS limit."""
    document = parse(current)
    existing = _statements(document)
    foreign = [s for s in existing if not _elevate(s)]
    ours: dict[str, dict[str, Any]] = {}
    for stmt in existing:
        expiry = expiry_of(stmt.get("Sid")) if isinstance(stmt, dict) else None
        key = _key_of(stmt) if expiry is not None else None
        if expiry is not None and expiry > now and key is not None:
            ours[key] = _latest(ours.get(key), stmt)
    for cut in cuts:
        if cut.expires_at > now:
            ours[cut.key] = _latest(ours.get(cut.key), statement(cut))
    kept = sorted(ours.values(), key=lambda s: str(s["Sid"]))
    expiries = [e for s in kept if (e := expiry_of(s["Sid"])) is not None]
    next_expiry = min(expiries, default=None)
    if kept == [s for s in existing if _elevate(s)]:
        return Merged(False, current, next_expiry)
    if not foreign and not kept:
        return Merged(True, None, None)
    out: dict[str, Any] = dict(document) if document is not None else {"Version": "2012-10-17"}
    out["Statement"] = [*foreign, *kept]
    text = json.dumps(out, separators=(",", ":"))
    if len(text) > INLINE_POLICY_LIMIT:
        raise PolicyTooLargeError(
            f"the inline policy would be {len(text)} characters with Elevate's cut "
            f"(AWS's limit: {INLINE_POLICY_LIMIT})"
        )
    return Merged(True, text, next_expiry)


def _elevate(stmt: object) -> bool:
    return isinstance(stmt, dict) and expiry_of(stmt.get("Sid")) is not None


def _latest(held: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if held is None:
        return new
    return new if str(new["Sid"]) > str(held["Sid"]) else held  # the later expiry


def elevate_statements(text: str | None) -> Sequence[dict[str, Any]]:
    """Elevate's statements in an inline policy (for the API and the tests)."""
    return [s for s in _statements(parse(text)) if _elevate(s)]
