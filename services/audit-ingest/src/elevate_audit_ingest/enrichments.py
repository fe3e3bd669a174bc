"""Elevate's context on an OCSF API Activity record: which grant or standing assignment
covers the call, or the finding that nothing does, that it outlived its grant, or that
another record reuses its eventID — and where the record was read from.

The names and fields here are what SIEM rules match on: docs/audit.md lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from elevate_audit_ingest.domain import (
    Conflict,
    Correlation,
    GrantWindow,
    Outcome,
    StandingAccess,
    TrailRecord,
)

LABEL_CONFLICT = "elevate:event-id-conflict"
PROVIDER = "Elevate"
# What pydantic-ocsf's str_strip_whitespace strips (Rust's trim: Unicode White_Space, which
# unlike str.isspace() leaves U+001C..U+001F): the mapping emits what validation would.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


@lru_cache(maxsize=1024)
def _iso(when: datetime, offset: timedelta | None) -> str:
    return when.isoformat()


def iso(when: datetime) -> str:
    """isoformat, once per instant: every record of a grant repeats its window. Keyed on
    the offset too, as equal instants in other zones compare (and hash) equal."""
    return _iso(when, when.utcoffset())


def text(value: object) -> str:
    """A string attribute of an OCSF object as the model normalises it (stripped)."""
    return str(value).strip(WHITESPACE)


def _shared_grant_enrichment(grant: GrantWindow, grace_until: datetime | None) -> dict[str, Any]:
    """The same for every record of a grant: built once and shared by their documents,
    which nothing changes after they are built (they are encoded, then dropped)."""
    offsets = (
        grant.start.utcoffset(),
        grant.end.utcoffset(),
        grace_until and grace_until.utcoffset(),
    )
    return _cached_grant_enrichment(grant, grace_until, offsets)


@lru_cache(maxsize=4096)  # grants active at once; keyed on the offsets too, as in iso()
def _cached_grant_enrichment(
    grant: GrantWindow, grace_until: datetime | None, _offsets: object
) -> dict[str, Any]:
    return grant_enrichment(grant, grace_until)


def grant_enrichment(grant: GrantWindow, grace_until: datetime | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": grant.request_id,
        "grant_id": grant.grant_id,
        "user_name": grant.user_name,
        "user_id": grant.user_id,
        "account_id": grant.account_id,
        "permission_set": grant.permission_set_name,
        "justification": grant.justification,
        "approvers": list(grant.approvers),
        "window_start": iso(grant.start),
        "window_end": iso(grant.end),
        "break_glass": grant.break_glass,
    }
    if grace_until is not None:
        data["window_grace_until"] = iso(grace_until)
    if grant.ticket:
        data["ticket"] = grant.ticket
    return {
        "name": "elevate.grant",
        "value": text(grant.request_id),
        "provider": PROVIDER,
        "data": data,
    }


def _outlived_enrichment(
    parsed: TrailRecord, grant: GrantWindow, correlation: Correlation, grace_until: datetime | None
) -> dict[str, Any]:
    started = parsed.session_started
    data: dict[str, Any] = {
        "request_id": grant.request_id,
        "grant_id": grant.grant_id,
        "window_end": iso(grant.end),
        # the service always knows it (end + grace) for a grant; null like session_created
        "window_grace_until": iso(grace_until) if grace_until else None,
        "reason": correlation.outlived.value if correlation.outlived else "",
        "session_created": started.isoformat() if started else None,
        "event_time": parsed.event_time.isoformat(),
    }
    return {
        "name": "elevate.outlived-grant",
        "value": text(grant.grant_id),
        "provider": PROVIDER,
        "data": data,
    }


def _uncovered_enrichment(parsed: TrailRecord) -> dict[str, Any]:
    return {
        "name": "elevate.uncovered",
        "value": text(parsed.permission_set or ""),
        "provider": PROVIDER,
        "data": {
            "account_id": parsed.account_id,
            "permission_set": parsed.permission_set,
            "session_name": parsed.session_name,
            "on_behalf_of_user_id": parsed.on_behalf_of_user_id,
        },
    }


def _standing_enrichment(access: StandingAccess) -> dict[str, Any]:
    return {
        "name": "elevate.standing",
        "value": text(access.permission_set_name),
        "provider": PROVIDER,
        "data": {
            "account_id": access.account_id,
            "permission_set": access.permission_set_name,
            "user_id": access.user_id,
            "user_name": access.user_name,
        },
    }


def _conflict_enrichment(parsed: TrailRecord, conflicts: Sequence[Conflict]) -> dict[str, Any]:
    return {
        "name": "elevate.event-id-conflict",
        "value": text(parsed.event_id),
        "provider": PROVIDER,
        "data": {
            "event_id": parsed.event_id,
            "digest": parsed.digest,
            "others": [{"digest": c.digest, "delivery": c.delivery} for c in conflicts],
        },
    }


def delivery_enrichment(parsed: TrailRecord) -> dict[str, Any] | None:
    if parsed.delivery is None:
        return None
    bucket, key = parsed.delivery
    return {
        "name": "elevate.delivery",
        "value": text(f"s3://{bucket}/{key}"),
        "provider": PROVIDER,
        "data": {"path": "s3", "bucket": bucket, "key": key},
    }


def _correlation_context(
    parsed: TrailRecord, correlation: Correlation, grace_until: datetime | None
) -> tuple[list[dict[str, Any]], str]:
    grant, standing = correlation.grant, correlation.standing
    if correlation.outcome is Outcome.OUTLIVED and grant is not None:
        return [
            _shared_grant_enrichment(grant, grace_until),
            _outlived_enrichment(parsed, grant, correlation, grace_until),
        ], (
            f"{parsed.event_name} by {grant.user_name} after Elevate request "
            f"{grant.request_id} ended at {iso(grant.end)}: access outlived the grant"
        )
    if grant is not None:
        return [_shared_grant_enrichment(grant, grace_until)], (
            f"{parsed.event_name} by {grant.user_name} under Elevate request {grant.request_id}"
        )
    if standing is not None:
        return [_standing_enrichment(standing)], (
            f"{parsed.event_name} under a standing assignment"
        )
    # Neither grant nor standing: uncovered (unmanaged records are never mapped).
    return [_uncovered_enrichment(parsed)], (
        f"{parsed.event_name} in Identity Center role of permission set "
        f"{parsed.permission_set} by session {parsed.session_name!r}: "
        "no Elevate grant or standing assignment covers it"
    )


def elevate_context(
    parsed: TrailRecord,
    correlation: Correlation,
    grace_until: datetime | None,
    conflicts: Sequence[Conflict] = (),
) -> dict[str, Any]:
    """`enrichments` and `message` for the record. Never called for an UNMANAGED one:
    service.emit and handle_batch emit nothing for those."""
    enrichments, message = _correlation_context(parsed, correlation, grace_until)
    if conflicts:
        enrichments.append(_conflict_enrichment(parsed, conflicts))
    delivery = delivery_enrichment(parsed)
    if delivery is not None:
        enrichments.append(delivery)
    return {"enrichments": enrichments, "message": text(message)}
