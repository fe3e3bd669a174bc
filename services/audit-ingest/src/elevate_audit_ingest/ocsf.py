"""OCSF 1.7 records for SIEMs, validated with the pinned `pydantic-ocsf` models.

- API Activity (6003) per CloudTrail record, mapped as AWS Security Lake maps CloudTrail,
  with Elevate's context (request id, justification, approvers, window) in
  `metadata.correlation_uid` and an `enrichments[]` entry named `elevate.grant`.
- The same class at severity High for a managed Identity Center role nothing covers, for
  access that outlived its grant, and for a record whose eventID another record reuses.
- User Access Management (3005) Assign/Revoke Privileges per grant activated/ended.

`validate_ocsf` refuses attributes the models do not know (the models accept extras), except
the `cloud` profile attribute, which it validates against the `Cloud` object. The models
check required attributes and `type_uid` themselves.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from elevate_core.errors import PermanentError
from ocsf._base import OCSFBaseModel
from ocsf.v1_7_0.events import ApiActivity, UserAccess
from ocsf.v1_7_0.objects import Cloud

from elevate_audit_ingest.domain import (
    KEY_EVENT_ID,
    Conflict,
    Correlation,
    GrantWindow,
    Outcome,
    TrailRecord,
)
from elevate_audit_ingest.enrichments import LABEL_CONFLICT, elevate_context, grant_enrichment

OCSF_VERSION = "1.7.0"
API_ACTIVITY = 6003
USER_ACCESS = 3005
SEVERITY_INFORMATIONAL = 1
SEVERITY_HIGH = 4
_FLAGGED = {Outcome.UNCOVERED, Outcome.OUTLIVED}
UID_DIGEST = 32  # hex digits of the content digest in metadata.uid (128 bits)
ASSIGN, REVOKE = 1, 2
_PROFILE_ATTRIBUTES = {"cloud": Cloud}
_CLASSES: dict[int, type[OCSFBaseModel]] = {API_ACTIVITY: ApiActivity, USER_ACCESS: UserAccess}

# Security Lake's CloudTrail mapping: the verb of eventName decides the activity.
_ACTIVITY_PREFIXES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("Create", "Add", "Run", "Register", "Allocate", "Import", "Issue"), 1),
    (("Get", "Describe", "List", "Head", "Lookup", "Search", "Select", "BatchGet"), 2),
    (("Update", "Put", "Modify", "Set", "Attach", "Enable", "Change", "Tag", "Start"), 3),
    (("Delete", "Remove", "Terminate", "Detach", "Disable", "Revoke", "Untag", "Stop"), 4),
)


class OcsfValidationError(PermanentError):
    pass


def millis(when: datetime) -> int:
    return int(when.astimezone(UTC).timestamp() * 1000)


def activity_for(event_name: str) -> int:
    for prefixes, activity in _ACTIVITY_PREFIXES:
        if event_name.startswith(prefixes):
            return activity
    return 99


def _extras(model: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(model, OCSFBaseModel):
        found += [f"{path}.{k}".lstrip(".") for k in (model.model_extra or {})]
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for n, item in enumerate(model):
            found += _extras(item, f"{path}[{n}]")
    return found


def validate_ocsf(document: Mapping[str, Any]) -> dict[str, Any]:
    """Validate against the OCSF 1.7 class model; returns the normalised JSON document."""
    cls = _CLASSES.get(int(document.get("class_uid", 0)))
    if cls is None:
        raise OcsfValidationError(f"unsupported class_uid {document.get('class_uid')!r}")
    try:
        model = cls.model_validate(dict(document))
        profiles = {
            name: obj.model_validate(document[name])
            for name, obj in _PROFILE_ATTRIBUTES.items()
            if name in document
        }
    except ValueError as exc:
        raise OcsfValidationError(str(exc)) from None
    unknown = [e for e in _extras(model, "") if e not in _PROFILE_ATTRIBUTES]
    for name, obj in profiles.items():
        unknown += _extras(obj, name)
    if unknown:
        raise OcsfValidationError(f"attributes outside OCSF {OCSF_VERSION}: {unknown}")
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return dumped


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _src_endpoint(record: Mapping[str, Any]) -> dict[str, Any]:
    source = str(record.get("sourceIPAddress") or "")
    endpoint: dict[str, Any] = {}
    try:
        endpoint["ip"] = str(ipaddress.ip_address(source))
    except ValueError:
        if source:
            endpoint["domain"] = source  # an AWS service principal, e.g. s3.amazonaws.com
    if record.get("vpcEndpointId"):
        endpoint["uid"] = str(record["vpcEndpointId"])
    return endpoint


def _actor_user(identity: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    user: dict[str, Any] = {"type": str(identity.get("type") or "Unknown")}
    for key, attribute in (
        ("arn", "uid"),
        ("principalId", "uid_alt"),
        ("accessKeyId", "credential_uid"),
    ):
        if identity.get(key):
            user[attribute] = identity[key]
    name = parsed.session_name or identity.get("userName")
    if name:
        user["name"] = name
    if identity.get("accountId"):
        user["account"] = {"uid": str(identity["accountId"]), "type_id": 10}
    return user


def _actor_session(identity: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    context = identity.get("sessionContext") or {}
    # Only Identity Center roles are emitted, so the role ARN (sessionIssuer.arn, or a
    # sign-in's roleArn) is always there.
    session: dict[str, Any] = {"issuer": parsed.role_arn}
    attributes = context.get("attributes") or {}
    # domain's reading of creationDate: an unreadable one is an unknown start, not an error
    if parsed.session_started is not None and not parsed.is_sign_in:
        session["created_time"] = millis(parsed.session_started)
    if "mfaAuthenticated" in attributes:
        session["is_mfa"] = str(attributes["mfaAuthenticated"]).lower() == "true"
    if identity.get("accessKeyId"):
        session["credential_uid"] = identity["accessKeyId"]
    return session


def _actor(record: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    identity = record.get("userIdentity") or {}
    actor: dict[str, Any] = {"user": _actor_user(identity, parsed)}
    actor["session"] = _actor_session(identity, parsed)
    if identity.get("invokedBy"):
        actor["invoked_by"] = identity["invokedBy"]
    if identity.get("identityProvider"):
        actor["idp"] = {"name": identity["identityProvider"]}
    return actor


def _metadata(
    parsed: TrailRecord,
    correlation: Correlation,
    processed_at: datetime | None,
    conflicts: Sequence[Conflict],
) -> dict[str, Any]:
    record = parsed.raw
    labels = [f"elevate:{correlation.outcome.value}"]
    if conflicts:
        labels.append(LABEL_CONFLICT)
    delivery = parsed.delivery
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        # The content is part of the uid: a SIEM deduplicating on it keeps a record and
        # another reusing its eventID apart (original_event_uid is the eventID itself). Cut
        # like the record key so that readers' 255-character dedupe keys hold it.
        "uid": f"{parsed.event_id[:KEY_EVENT_ID]}:{parsed.digest[:UID_DIGEST]}",
        "original_event_uid": parsed.event_id,
        "product": {
            "name": "CloudTrail",
            "vendor_name": "AWS",
            "version": str(record.get("eventVersion") or ""),
            "feature": {"name": str(record.get("eventCategory") or "Management")},
        },
        "profiles": ["cloud"],
        "labels": labels,
        "original_time": str(record.get("eventTime")),
        "log_source": f"s3://{delivery[0]}/{delivery[1]}" if delivery else "kafka",
    }
    if record.get("eventType"):
        metadata["event_code"] = str(record["eventType"])
    if processed_at is not None:
        metadata["processed_time"] = millis(processed_at)
    if correlation.grant is not None:
        metadata["correlation_uid"] = correlation.grant.request_id
    return metadata


def _api(parsed: TrailRecord) -> dict[str, Any]:
    record = parsed.raw
    api: dict[str, Any] = {
        "operation": parsed.event_name or "Unknown",
        "service": {"name": str(record.get("eventSource") or "")},
        "request": {"uid": str(record.get("requestID") or parsed.event_id)},
    }
    if isinstance(record.get("requestParameters"), Mapping):
        api["request"]["data"] = dict(record["requestParameters"])
    response: dict[str, Any] = {}
    if isinstance(record.get("responseElements"), Mapping):
        response["data"] = dict(record["responseElements"])
    if record.get("errorCode"):
        response["error"] = str(record["errorCode"])
        if record.get("errorMessage"):
            response["error_message"] = str(record["errorMessage"])
    if response:
        api["response"] = response
    if record.get("apiVersion"):
        api["version"] = str(record["apiVersion"])
    return api


def _resources(record: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"uid": str(r["ARN"]), "type": str(r.get("type") or "")}
        for r in record.get("resources") or []
        if isinstance(r, Mapping) and r.get("ARN")
    ]


def _recipient(record: Mapping[str, Any], parsed: TrailRecord) -> str:
    return str(record.get("recipientAccountId") or parsed.account_id or "")


def api_activity(
    parsed: TrailRecord,
    correlation: Correlation,
    *,
    grace_until: datetime | None = None,
    processed_at: datetime | None = None,
    conflicts: Sequence[Conflict] = (),
) -> dict[str, Any]:
    """The OCSF API Activity record for one CloudTrail record (validated). `conflicts`: the
    other contents known under its eventID."""
    record = parsed.raw
    activity = activity_for(parsed.event_name)
    failed = bool(record.get("errorCode"))
    flagged = correlation.outcome in _FLAGGED or bool(conflicts)
    doc: dict[str, Any] = {
        "class_uid": API_ACTIVITY,
        "category_uid": 6,
        "activity_id": activity,
        "type_uid": API_ACTIVITY * 100 + activity,
        "severity_id": SEVERITY_HIGH if flagged else SEVERITY_INFORMATIONAL,
        "status_id": 2 if failed else 1,
        "time": millis(parsed.event_time),
        "metadata": _metadata(parsed, correlation, processed_at, conflicts),
        "actor": _actor(record, parsed),
        "api": _api(parsed),
        "src_endpoint": _src_endpoint(record),
        "cloud": {
            "provider": "AWS",
            "region": str(record.get("awsRegion") or ""),
            # the trail's account, as Security Lake maps it (the role's is actor.user.account)
            "account": {"uid": _recipient(record, parsed), "type_id": 10},
        },
    }
    if failed:
        doc["status_code"] = str(record["errorCode"])
    if record.get("userAgent"):
        doc["http_request"] = {"user_agent": str(record["userAgent"])}
    resources = _resources(record)
    if resources:
        doc["resources"] = resources
    doc |= elevate_context(parsed, correlation, grace_until, conflicts)
    return validate_ocsf(doc)


def user_access(
    grant: GrantWindow,
    *,
    activity: int,
    at: datetime,
    event_uid: str,
    permission_set_arn: str | None = None,
    account_name: str | None = None,
    reason: str | None = None,
    user_email: str | None = None,
) -> dict[str, Any]:
    """User Access Management: Assign (1) on activation, Revoke (2) on end (validated)."""
    verb = "assigned" if activity == ASSIGN else "revoked"
    user: dict[str, Any] = {"name": grant.user_name, "uid": grant.user_id, "type_id": 1}
    if user_email:
        user["email_addr"] = user_email
    resource: dict[str, Any] = {"uid": grant.account_id, "type": "AWS::Organizations::Account"}
    if account_name:
        resource["name"] = account_name
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "uid": event_uid,
        "correlation_uid": grant.request_id,
        "product": {"name": "Elevate", "vendor_name": "Elevate"},
        "profiles": ["cloud"],
        "labels": ["elevate:grant"],
    }
    doc: dict[str, Any] = {
        "class_uid": USER_ACCESS,
        "category_uid": 3,
        "activity_id": activity,
        "type_uid": USER_ACCESS * 100 + activity,
        "severity_id": 3 if grant.break_glass else SEVERITY_INFORMATIONAL,
        "status_id": 1,
        "time": millis(at),
        "metadata": metadata,
        "user": user,
        "privileges": [grant.permission_set_name],
        "resource": resource,
        "actor": {"app_name": "Elevate grant-worker"},
        "message": (
            f"{grant.permission_set_name} on {grant.account_id} {verb} for {grant.user_name} "
            f"(request {grant.request_id}{', ' + reason if reason else ''})"
        ),
        "cloud": {"provider": "AWS", "account": {"uid": grant.account_id, "type_id": 10}},
        "enrichments": [grant_enrichment(grant, None)],
    }
    if permission_set_arn:
        doc["enrichments"][0]["data"]["permission_set_arn"] = permission_set_arn
    if reason:
        doc["enrichments"][0]["data"]["reason"] = reason
    return validate_ocsf(doc)
