"""OCSF 1.7 records for SIEMs, in the shape the pinned `pydantic-ocsf` models validate.

- API Activity (6003) per CloudTrail record, mapped as AWS Security Lake maps CloudTrail,
  with Elevate's context (request id, justification, approvers, window) in
  `metadata.correlation_uid` and an `enrichments[]` entry named `elevate.grant`.
- The same class at severity High for a managed Identity Center role nothing covers, for
  access that outlived its grant, and for a record whose eventID another record reuses.
- User Access Management (3005) Assign/Revoke Privileges per grant activated/ended.

Validating every record costs ten times the mapping, so the mappers write the normalised
document the model would return themselves: the sibling labels of each `*_id` (`severity`,
`status`, `activity_name`, `type`, `actor.user.type_id`) and string attributes stripped as
the models strip them. The corpus test (test_ocsf_corpus.py) holds every mapping branch to
`validate_ocsf(doc) == doc`.

`validate_ocsf` refuses attributes the models do not know (the models accept extras), except
the `cloud` profile attribute, which it validates against the `Cloud` object. The models
check required attributes and `type_uid` themselves.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
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
    is_mapping,
)
from elevate_audit_ingest.enrichments import (
    LABEL_CONFLICT,
    elevate_context,
    grant_enrichment,
    text,
)

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

# The labels OCSF 1.7 gives the ids the mappers emit (what validation would add).
_API_ACTIVITY_NAMES = {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_USER_ACCESS_NAMES = {ASSIGN: "Assign Privileges", REVOKE: "Revoke Privileges"}
_SEVERITIES = {SEVERITY_INFORMATIONAL: "Informational", 3: "Medium", SEVERITY_HIGH: "High"}
_STATUSES = {1: "Success", 2: "Failure"}
# user.type_id from its label, case-insensitively; any other label is Other (99)
_USER_TYPE_IDS = {"unknown": 0, "user": 1, "admin": 2, "system": 3, "service": 4, "other": 99}
AWS_ACCOUNT = 10, "AWS Account"  # account.type_id and its label

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
    # an aware datetime's timestamp does not depend on its zone (naive ones are local)
    return int(when.timestamp() * 1000)


@lru_cache(maxsize=4096)  # eventNames are AWS's API names: a few thousand at most
def activity_for(event_name: str) -> int:
    for prefixes, activity in _ACTIVITY_PREFIXES:
        if event_name.startswith(prefixes):
            return activity
    return 99


def _aws_account(uid: str) -> dict[str, Any]:
    return {"uid": uid, "type_id": AWS_ACCOUNT[0], "type": AWS_ACCOUNT[1]}


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
        # a copy: the models' "before" validators fill labels into nested dicts in place,
        # which would make `validate_ocsf(doc) == doc` true of nearly any doc
        model = cls.model_validate(copy.deepcopy(dict(document)))
        profiles = {
            name: obj.model_validate(copy.deepcopy(document[name]))
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
    for name, profile in profiles.items():  # normalised like the class's own attributes
        dumped[name] = profile.model_dump(mode="json", exclude_none=True)
    return dumped


def encode(document: Mapping[str, Any]) -> bytes:
    """Compact JSON, keys in the mapper's order: the same JSON value json.dumps gave, at a
    tenth of the cost (sorting the keys would add a third)."""
    return orjson.dumps(document)


@lru_cache(maxsize=4096)  # a session calls from few addresses; parsing one costs ~3 µs
def _source(source: str) -> tuple[str, str] | None:
    """`src_endpoint`'s attribute for sourceIPAddress: an IP, or an AWS service principal
    (e.g. s3.amazonaws.com) as its domain."""
    try:
        return "ip", str(ipaddress.ip_address(source))
    except ValueError:
        return ("domain", text(source)) if source else None


def _src_endpoint(record: Mapping[str, Any]) -> dict[str, Any]:
    endpoint: dict[str, Any] = {}
    source = _source(str(record.get("sourceIPAddress") or ""))
    if source is not None:
        endpoint[source[0]] = source[1]
    vpc_endpoint = record.get("vpcEndpointId")
    if vpc_endpoint:
        endpoint["uid"] = text(vpc_endpoint)
    return endpoint


def _actor_user(identity: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    kind = str(identity.get("type") or "Unknown")
    # the model derives type_id from the label before it strips it
    user: dict[str, Any] = {"type": text(kind), "type_id": _USER_TYPE_IDS.get(kind.lower(), 99)}
    for key, attribute in (
        ("arn", "uid"),
        ("principalId", "uid_alt"),
        ("accessKeyId", "credential_uid"),
    ):
        value = identity.get(key)
        if value:
            user[attribute] = text(value)
    name = parsed.session_name or identity.get("userName")
    if name:
        user["name"] = str(name)  # User.name is not stripped by the model
    account = identity.get("accountId")
    if account:
        user["account"] = _aws_account(text(account))
    return user


def _actor_session(identity: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    context = identity.get("sessionContext") or {}
    # Only Identity Center roles are emitted, so the role ARN (sessionIssuer.arn, or a
    # sign-in's roleArn) is always there.
    session: dict[str, Any] = {"issuer": text(parsed.role_arn)}
    attributes = context.get("attributes") or {}
    # domain's reading of creationDate: an unreadable one is an unknown start, not an error
    if parsed.session_started is not None and not parsed.is_sign_in:
        session["created_time"] = millis(parsed.session_started)
    if "mfaAuthenticated" in attributes:
        session["is_mfa"] = str(attributes["mfaAuthenticated"]).lower() == "true"
    key = identity.get("accessKeyId")
    if key:
        session["credential_uid"] = text(key)
    return session


def _actor(record: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    identity = record.get("userIdentity") or {}
    actor: dict[str, Any] = {
        "user": _actor_user(identity, parsed),
        "session": _actor_session(identity, parsed),
    }
    invoked_by, idp = identity.get("invokedBy"), identity.get("identityProvider")
    if invoked_by:
        actor["invoked_by"] = text(invoked_by)
    if idp:
        actor["idp"] = {"name": text(idp)}
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
    event_id = parsed.event_id
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        # The content is part of the uid: a SIEM deduplicating on it keeps a record and
        # another reusing its eventID apart (original_event_uid is the eventID itself). Cut
        # like the record key so that readers' 255-character dedupe keys hold it.
        "uid": text(f"{event_id[:KEY_EVENT_ID]}:{parsed.digest[:UID_DIGEST]}"),
        "original_event_uid": text(event_id),
        "product": {
            "name": "CloudTrail",
            "vendor_name": "AWS",
            "version": text(record.get("eventVersion") or ""),
            "feature": {"name": text(record.get("eventCategory") or "Management")},
        },
        "profiles": ["cloud"],
        "labels": labels,
        "original_time": text(record.get("eventTime")),
        "log_source": text(f"s3://{delivery[0]}/{delivery[1]}") if delivery else "kafka",
    }
    event_type = record.get("eventType")
    if event_type:
        metadata["event_code"] = text(event_type)
    if processed_at is not None:
        metadata["processed_time"] = millis(processed_at)
    if correlation.grant is not None:
        metadata["correlation_uid"] = text(correlation.grant.request_id)
    return metadata


def _api(parsed: TrailRecord, error: Any) -> dict[str, Any]:
    record = parsed.raw
    request: dict[str, Any] = {"uid": text(record.get("requestID") or parsed.event_id)}
    api: dict[str, Any] = {
        "operation": text(parsed.event_name or "Unknown"),
        "service": {"name": text(record.get("eventSource") or "")},
        "request": request,
    }
    params, elements = record.get("requestParameters"), record.get("responseElements")
    if is_mapping(params):
        request["data"] = dict(params)
    response: dict[str, Any] = {}
    if is_mapping(elements):
        response["data"] = dict(elements)
    if error:
        response["error"] = text(error)
        message = record.get("errorMessage")
        if message:
            response["error_message"] = text(message)
    if response:
        api["response"] = response
    version = record.get("apiVersion")
    if version:
        api["version"] = text(version)
    return api


def _resources(record: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"uid": str(r["ARN"]), "type": text(r.get("type") or "")}
        for r in record.get("resources") or []
        if is_mapping(r) and r.get("ARN")
    ]


def _cloud(record: Mapping[str, Any], parsed: TrailRecord) -> dict[str, Any]:
    # the trail's account, as Security Lake maps it (the role's is actor.user.account)
    account = text(record.get("recipientAccountId") or parsed.account_id or "")
    region = text(record.get("awsRegion") or "")
    return {"provider": "AWS", "region": region, "account": _aws_account(account)}


def api_activity(
    parsed: TrailRecord,
    correlation: Correlation,
    *,
    grace_until: datetime | None = None,
    processed_at: datetime | None = None,
    conflicts: Sequence[Conflict] = (),
) -> dict[str, Any]:
    """The OCSF API Activity record for one CloudTrail record, as validation would return
    it. `conflicts`: the other contents known under its eventID."""
    record = parsed.raw
    activity = activity_for(parsed.event_name)
    error = record.get("errorCode")
    severity = (
        SEVERITY_HIGH if correlation.outcome in _FLAGGED or conflicts else SEVERITY_INFORMATIONAL
    )
    status = 2 if error else 1
    doc: dict[str, Any] = {
        "class_uid": API_ACTIVITY,
        "category_uid": 6,
        "activity_id": activity,
        "activity_name": _API_ACTIVITY_NAMES[activity],
        "type_uid": API_ACTIVITY * 100 + activity,
        "severity_id": severity,
        "severity": _SEVERITIES[severity],
        "status_id": status,
        "status": _STATUSES[status],
        "time": millis(parsed.event_time),
        "metadata": _metadata(parsed, correlation, processed_at, conflicts),
        "actor": _actor(record, parsed),
        "api": _api(parsed, error),
        "src_endpoint": _src_endpoint(record),
        "cloud": _cloud(record, parsed),
    }
    if error:
        doc["status_code"] = text(error)
    user_agent = record.get("userAgent")
    if user_agent:
        doc["http_request"] = {"user_agent": text(user_agent)}
    resources = _resources(record)
    if resources:
        doc["resources"] = resources
    doc |= elevate_context(parsed, correlation, grace_until, conflicts)
    return doc


def _grant_metadata(grant: GrantWindow, event_uid: str) -> dict[str, Any]:
    return {
        "version": OCSF_VERSION,
        "uid": text(event_uid),
        "correlation_uid": text(grant.request_id),
        "product": {"name": "Elevate", "vendor_name": "Elevate"},
        "profiles": ["cloud"],
        "labels": ["elevate:grant"],
    }


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
    """User Access Management: Assign (1) on activation, Revoke (2) on end, as validation
    would return it."""
    verb = "assigned" if activity == ASSIGN else "revoked"
    user: dict[str, Any] = {
        "name": grant.user_name,
        "uid": text(grant.user_id),
        "type_id": 1,
        "type": "User",
    }
    if user_email:
        user["email_addr"] = user_email
    resource: dict[str, Any] = {"uid": grant.account_id, "type": "AWS::Organizations::Account"}
    if account_name:
        resource["name"] = text(account_name)
    severity = 3 if grant.break_glass else SEVERITY_INFORMATIONAL
    enrichment = grant_enrichment(grant, None)
    doc: dict[str, Any] = {
        "class_uid": USER_ACCESS,
        "category_uid": 3,
        "activity_id": activity,
        "activity_name": _USER_ACCESS_NAMES[activity],
        "type_uid": USER_ACCESS * 100 + activity,
        "severity_id": severity,
        "severity": _SEVERITIES[severity],
        "status_id": 1,
        "status": _STATUSES[1],
        "time": millis(at),
        "metadata": _grant_metadata(grant, event_uid),
        "user": user,
        "privileges": [text(grant.permission_set_name)],
        "resource": resource,
        "actor": {"app_name": "Elevate grant-worker"},
        "message": text(
            f"{grant.permission_set_name} on {grant.account_id} {verb} for {grant.user_name} "
            f"(request {grant.request_id}{', ' + reason if reason else ''})"
        ),
        "cloud": {"provider": "AWS", "account": _aws_account(text(grant.account_id))},
        "enrichments": [enrichment],
    }
    if permission_set_arn:
        enrichment["data"]["permission_set_arn"] = permission_set_arn
    if reason:
        enrichment["data"]["reason"] = reason
    return doc
