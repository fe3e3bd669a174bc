"""The read model's consumers: requests, decisions and grants topics → each request's
event log and the status and timeline folded from it; the audit topic → activity."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from elevate_core.events.envelope import Envelope
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api import store
from elevate_request_api.models import ActivityRecord


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


OUTLIVED = "elevate.outlived-grant"  # audit-ingest's finding (its enrichments.py)


async def project_activity(session: AsyncSession, envelope: Envelope) -> None:
    """Attach a correlated CloudTrail action (OCSF API Activity) to its request."""
    record = envelope.data
    if record.get("class_uid") != 6003:
        return  # grant assign/revoke records: the timeline already has those facts
    correlation = (record.get("metadata") or {}).get("correlation_uid")
    try:
        request_id = uuid.UUID(str(correlation))
    except ValueError:
        return  # activity no grant covers: not part of any request's evidence
    # Kept even before its request is known: the request's page shows it once it is.
    api = record.get("api") or {}
    endpoint = record.get("src_endpoint") or {}
    session.add(
        ActivityRecord(
            request_id=request_id,
            at=datetime.fromtimestamp(int(record["time"]) / 1000, tz=UTC),
            operation=str(api.get("operation", "?"))[:255],
            service=((api.get("service") or {}).get("name") or None),
            severity=_SEVERITY.get(int(record.get("severity_id", 0)), "unknown"),
            source_ip=endpoint.get("ip") or endpoint.get("domain"),
            record_uid=envelope.id,
            result=_result(record),
            outlived=any(
                isinstance(e, dict) and e.get("name") == OUTLIVED
                for e in record.get("enrichments") or ()
            ),
        )
    )


def _result(record: dict[str, Any]) -> str:
    status = str(record.get("status") or "Unknown")
    code = record.get("status_code")
    return f"{status} ({code})"[:160] if code else status[:160]
