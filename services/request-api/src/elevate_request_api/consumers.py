"""The read model's consumers: requests, decisions and grants topics → each request's
event log and the status and timeline folded from it; the audit topic → activity."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from elevate_core.events.envelope import Envelope
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api import store
from elevate_request_api.models import ActivityRecord, UncoveredActivity


async def project(session: AsyncSession, envelope: Envelope) -> None:
    """Fold one event into the read model (runs in the consumer's transaction). An event
    whose request is not known yet is kept and folded in when the request arrives."""
    await store.record(session, envelope)


_SEVERITY = {
    0: "unknown",
    1: "informational",
    2: "low",
    3: "medium",
    4: "high",
    5: "critical",
    6: "fatal",
}


def audit_record_key(data: dict[str, Any]) -> str | None:
    """Dedupe key of an OCSF record on elevate.audit.v1."""
    metadata = data.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return str(uid) if uid else None


# audit-ingest's findings (its enrichments.py)
OUTLIVED = "elevate.outlived-grant"
UNCOVERED = "elevate.uncovered"


def wants_activity(envelope: Envelope) -> bool:
    """OCSF API Activity only: grant assign/revoke records are facts the timeline has."""
    return envelope.data.get("class_uid") == 6003


async def project_activity(session: AsyncSession, envelope: Envelope) -> None:
    """Attach a correlated CloudTrail action (OCSF API Activity) to its request; keep an
    uncovered one (a managed role nothing covers) for the pages that show those."""
    record = envelope.data
    if not wants_activity(envelope):
        return
    correlation = (record.get("metadata") or {}).get("correlation_uid")
    try:
        request_id = uuid.UUID(str(correlation))
    except ValueError:
        uncovered = _enrichment(record, UNCOVERED)
        if uncovered is not None:
            session.add(_uncovered(record, uncovered, envelope.id))
        return  # standing access, or not Elevate's to judge: no request's evidence
    # Kept even before its request is known: the request's page shows it once it is.
    session.add(
        ActivityRecord(
            request_id=request_id,
            **_action(record),
            severity=_SEVERITY.get(int(record.get("severity_id", 0)), "unknown"),
            record_uid=envelope.id,
            outlived=_enrichment(record, OUTLIVED) is not None,
        )
    )


def _action(record: dict[str, Any]) -> dict[str, Any]:
    """What every activity row says of the action."""
    api = record.get("api") or {}
    endpoint = record.get("src_endpoint") or {}
    return {
        "at": datetime.fromtimestamp(int(record["time"]) / 1000, tz=UTC),
        "operation": str(api.get("operation", "?"))[:255],
        "service": ((api.get("service") or {}).get("name") or None),
        "source_ip": endpoint.get("ip") or endpoint.get("domain"),
        "result": _result(record),
    }


def _enrichment(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    for e in record.get("enrichments") or ():
        if isinstance(e, dict) and e.get("name") == name:
            return e
    return None


def _uncovered(record: dict[str, Any], finding: dict[str, Any], uid: str) -> UncoveredActivity:
    data = finding.get("data") or {}
    action = _action(record)
    return UncoveredActivity(
        at=action["at"],
        account_id=str(data.get("account_id") or "")[:12],
        permission_set=_text(data.get("permission_set"), 64),
        session_name=_text(data.get("session_name"), 64),
        user_id=_text(data.get("on_behalf_of_user_id"), 128),
        operation=action["operation"],
        service=action["service"],
        source_ip=action["source_ip"],
        result=action["result"],
        record_uid=uid,
    )


def _text(value: object, limit: int) -> str | None:
    return str(value)[:limit] if value else None


def _result(record: dict[str, Any]) -> str:
    status = str(record.get("status") or "Unknown")
    code = record.get("status_code")
    return f"{status} ({code})"[:160] if code else status[:160]
