"""The event contract: naming rule, CloudEvents binary mode, schema drift."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from elevate_core.events import decode, encode
from elevate_core.events.base import ce_type_for, event_class_for, registered_events
from elevate_core.events.compat import compatibility_problems
from elevate_core.events.envelope import EnvelopeError, new_envelope
from elevate_core.events.models import (
    Person,
    RequestSubmitted,
    RevokeRequested,
)
from elevate_core.events.schemas import breaking_changes, render_schemas
from elevate_core.events.schemas import main as schemas_main
from elevate_core.events.topics import Topics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "ce_type"),
    [
        ("RequestSubmitted", "io.elevate.request.submitted.v1"),
        ("DecisionSubmitted", "io.elevate.decision.submitted.v1"),
        ("GrantRevocationFailed", "io.elevate.grant.revocation.failed.v1"),
        ("StandingAssignmentRecorded", "io.elevate.standing.assignment.recorded.v1"),
    ],
)
def test_class_name_maps_to_ce_type(name: str, ce_type: str) -> None:
    assert ce_type_for(name) == ce_type
    assert event_class_for(ce_type).__name__ == name


def test_every_architecture_event_is_registered_on_its_writers_topic() -> None:
    by_topic: dict[Topics, set[str]] = {}
    for cls in registered_events().values():
        by_topic.setdefault(cls.topic, set()).add(cls.__name__)
    assert by_topic[Topics.REQUESTS] == {
        "RequestSubmitted",
        "RequestCancelled",
        "DecisionSubmitted",
        "RevokeRequested",
        "BreakGlassReviewed",
        "AuditTrailRead",
    }
    assert by_topic[Topics.DECISIONS] == {
        "ApprovalRequested",
        "DecisionRecorded",
        "DecisionRefused",
        "RequestApproved",
        "RequestRejected",
        "RequestExpired",
        "BreakGlassUsed",
    }
    assert by_topic[Topics.GRANTS] == {
        "GrantScheduled",
        "GrantActivated",
        "GrantFailed",
        "GrantEnded",
        "GrantRevocationFailed",
        "DriftDetected",
        "StandingAssignmentRecorded",
        "StandingAssignmentDropped",
        "SessionCutRefused",
    }


def _submitted() -> RequestSubmitted:
    return RequestSubmitted(
        request_id=uuid.uuid4(),
        requester=Person(user_name="alice", user_id="u-1", email="alice@example.com"),
        account_id="111111111111",
        permission_set_name="ReadOnlyAccess",
        permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
        start=datetime(2026, 1, 1, 9, tzinfo=UTC),
        end=datetime(2026, 1, 1, 10, tzinfo=UTC),
        justification="INC-42 on-call",
        matched_rule="engineers-sandbox",
        policy_version="abc",
    )


def test_binary_mode_round_trip() -> None:
    event = _submitted()
    env = new_envelope(
        event,
        source="elevate/request-api",
        subject=str(event.request_id),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    value, headers = encode(env)
    names = dict(headers)
    assert names["ce_type"] == b"io.elevate.request.submitted.v1"
    assert names["content-type"] == b"application/json"
    back = decode(value, headers)
    assert back.id == env.id
    assert back.subject == str(event.request_id)
    assert back.traceparent == env.traceparent
    assert back.event() == event


@pytest.mark.parametrize(
    ("value", "drop", "message"),
    [
        (b"{not json", None, "not JSON"),
        (b"[1,2]", None, "JSON object"),
        (None, None, "empty"),
        (b"{}", "ce_id", "ce_id"),
        (b"{}", "ce_specversion", "ce_specversion"),
    ],
)
def test_malformed_messages_are_refused_clearly(
    value: bytes | None, drop: str | None, message: str
) -> None:
    env = new_envelope(
        RevokeRequested(request_id=uuid.uuid4(), requested_by=Person(user_name="a", user_id="b")),
        source="s",
        subject="x",
    )
    _, headers = encode(env)
    headers = [(k, v) for k, v in headers if k != drop]
    with pytest.raises(EnvelopeError, match=message):
        decode(value, headers)


def test_data_that_does_not_fit_its_type_is_refused() -> None:
    _, headers = encode(
        new_envelope(
            RevokeRequested(
                request_id=uuid.uuid4(), requested_by=Person(user_name="a", user_id="b")
            ),
            source="s",
            subject="x",
        )
    )
    with pytest.raises(EnvelopeError, match="requested_by"):
        decode(b'{"request_id": "' + str(uuid.uuid4()).encode() + b'"}', headers).event()


def test_generated_schemas_match_docs() -> None:
    """Fails when the models change without `make schemas`."""
    rendered = render_schemas()
    on_disk = {p.name: p.read_text() for p in (ROOT / "docs/events").glob("io.elevate.*.json")}
    assert set(on_disk) == set(rendered), "docs/events lists other events than the models"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"docs/events/{name} is stale: run `make schemas`"


def test_committed_schemas_are_the_compatibility_contract() -> None:
    """Within v1 the models may only add optional fields to what docs/events/ holds."""
    assert breaking_changes(ROOT / "docs/events") == []


def _committed(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "docs/events" / name).read_text()))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["properties"].pop("reason"), "reason: field removed"),
        (lambda s: s["required"].append("reason"), "reason: optional field made required"),
        (
            lambda s: s["properties"].__setitem__("request_id", {"type": "integer"}),
            "request_id: type changed",
        ),
        (
            lambda s: s["$defs"]["Person"]["properties"].pop("user_id"),
            "requested_by.user_id: field removed",
        ),
        (
            lambda s: (
                s["properties"].__setitem__("urgency", {"type": "string"}),
                s["required"].append("urgency"),
            ),
            "urgency: new field is required",
        ),
        (lambda s: s.__setitem__("additionalProperties", False), "unknown fields now refused"),
    ],
    ids=["removed", "made-required", "type", "nested-removed", "new-required", "closed"],
)
def test_the_compatibility_check_catches(change: Any, problem: str) -> None:
    old = _committed("io.elevate.revoke.requested.v1.json")
    new = copy.deepcopy(old)
    change(new)
    problems = compatibility_problems(old, new)
    assert any(problem in p for p in problems), problems


def test_the_compatibility_check_allows_a_new_optional_field() -> None:
    old = _committed("io.elevate.grant.ended.v1.json")
    new = copy.deepcopy(old)
    new["properties"]["sessions_cut"] = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
    assert compatibility_problems(old, new) == []
    literal = copy.deepcopy(old)
    literal["properties"]["reason"]["enum"].remove("drift")
    assert any("allowed values removed" in p for p in compatibility_problems(old, literal))


def test_make_schemas_refuses_a_breaking_change(tmp_path: Path) -> None:
    target = tmp_path / "events"
    target.mkdir()
    schema = _committed("io.elevate.revoke.requested.v1.json")
    schema["properties"]["legacy_field"] = {"type": "string"}  # the model no longer has it
    (target / "io.elevate.revoke.requested.v1.json").write_text(json.dumps(schema))
    assert schemas_main([str(target)]) == 1
    assert "legacy_field" in (target / "io.elevate.revoke.requested.v1.json").read_text()
    assert schemas_main([str(target), "--allow-breaking"]) == 0
