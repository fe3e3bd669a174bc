"""Loading: durations, versions, line numbers through anchors, warnings, errors."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path

import pytest
from elevate_core.errors import ElevateError
from elevate_core.policy import (
    Evaluator,
    Issue,
    PolicyError,
    PolicyFileError,
    PolicyValidationError,
    check_policy,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy,
)
from elevate_core.policy.loader import MAX_POLICY_BYTES

from tests.unit.policy.org import ACCOUNTS, USERS

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "local" / "policy.yaml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("8h", timedelta(hours=8)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize(
    "text", ["", "0m", "1", "h", "1.5h", "PT4H", "1m1h", "-1h", "1 h", "1h1h", "99999d"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_example_policy_loads_and_evaluates() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.version == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()[:12]
    assert policy.warnings == ()
    assert policy.auditor_groups == {"auditors"}
    assert policy.admin_groups == {"elevate-admins"}
    evaluator = Evaluator(policy, ACCOUNTS.values())
    alice, erin, bob = USERS["alice"], USERS["erin"], USERS["bob-sre"]
    admin = evaluator.terms(alice, ACCOUNTS["payments-prod"].id, "AdministratorAccess")
    assert admin is not None
    assert admin.approval.name == "one-sre-lead"
    assert admin.ticket_required
    assert admin.max_duration == timedelta(hours=4)
    assert admin.problems(duration=timedelta(hours=1), ticket="OPS-42") == ()
    assert admin.problems(duration=timedelta(hours=1), ticket="ops 42")
    dba = evaluator.terms(bob, ACCOUNTS["data-prod"].id, "DatabaseAdmin")
    assert dba is not None
    assert dba.approval.required_approvals == 2
    sandbox = evaluator.terms(erin, ACCOUNTS["sandbox-alice"].id, "ReadOnlyAccess")
    assert sandbox is not None
    assert sandbox.approval.auto_approve
    assert evaluator.terms(erin, ACCOUNTS["payments-prod"].id, "ReadOnlyAccess") is None
    glass = evaluator.eligibility(alice, break_glass=True)
    assert ACCOUNTS["log-archive"].id not in glass.account_ids("AdministratorAccess")
    assert ACCOUNTS["management"].id not in glass.account_ids("AdministratorAccess")
    assert ACCOUNTS["shared-services"].id in glass.account_ids("AdministratorAccess")
    assert evaluator.standing_assignments() == (
        (ACCOUNTS["log-archive"].id, "ReadOnlyAccess", "carol"),
    )
    assert policy.is_auditor(USERS["carol"])
    assert policy.is_admin(USERS["dave"])
    assert not policy.is_admin(alice)


def test_anchors_and_merge_keys_keep_lines() -> None:
    text = b"""\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - {name: leads, approver_groups: [sre-leads]}
x-defaults: &defaults
  principals: {groups: [sre]}
  approval: leads
  max_duration: 4h
eligibility:
  - <<: *defaults
    name: a
    accounts: [{ou: Sandbox}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 1x
"""
    result = check_policy(text, source="a.yaml")
    assert [str(i) for i in result.errors] == [
        "a.yaml:5: x-defaults: unknown field (allowed here: admin_groups, approval_rules, "
        "auditor_groups, cut_sessions, eligibility, schema_version, standing_assignments)",
        "a.yaml:14: eligibility[0].max_duration: invalid duration '1x': use e.g. '30m', '1h', "
        "'8h', '1h30m' or '2d' (units d, h, m, s, largest first)",
    ]
    merged = check_policy(
        b"""\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - {name: leads, approver_groups: [sre-leads]}
eligibility:
  - &base
    name: a
    principals: {groups: [sre]}
    accounts: [{ou: Sandbox}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    approval: 7
  - <<: *base
    name: b
""",
        source="m.yaml",
    )
    # the merged rule's error points at the line the value is written on: the anchor's
    assert [str(i) for i in merged.errors] == [
        "m.yaml:12: eligibility[0].approval: Input should be a valid string (got 7)",
        "m.yaml:12: eligibility[1].approval: Input should be a valid string (got 7)",
    ]


def test_merge_keys_work() -> None:
    policy = parse_policy(b"""\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - &leads {name: leads, approver_groups: [sre-leads]}
eligibility:
  - &base
    name: a
    principals: {groups: [sre]}
    accounts: [{ou: Sandbox}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    approval: leads
  - <<: *base
    name: b
    max_duration: 2h
""")
    assert [(r.name, r.max_duration) for r in policy.eligibility_rules] == [
        ("a", timedelta(hours=1)),
        ("b", timedelta(hours=2)),
    ]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    started = time.monotonic()
    result = check_policy("\n".join(lines).encode(), source="bomb.yaml")
    assert time.monotonic() - started < 5
    assert [i.message for i in result.errors] == ["more than 200000 nodes after aliases"]


def test_size_and_encoding_limits() -> None:
    big = check_policy(b"#" * (MAX_POLICY_BYTES + 1), source="big.yaml")
    assert big.errors[0].message == f"larger than {MAX_POLICY_BYTES} bytes"
    binary = check_policy(b"\xff\xfe\x00", source="bin.yaml")
    assert binary.errors[0].message.startswith("not UTF-8 text")
    control = check_policy(b"schema_version: \x07\n", source="bell.yaml")
    assert [i.message.split(":")[0] for i in control.errors] == ["YAML error"]
    assert "unacceptable character #x0007" in control.errors[0].message


def test_static_warnings() -> None:
    result = check_policy(
        b"""\
schema_version: 1
approval_rules:
  - {name: leads, approver_groups: [sre-leads]}
  - {name: spare, approver_groups: [sre-leads]}
eligibility:
  - name: a
    principals: {groups: [sre]}
    accounts: ["*"]
    permission_sets: [ReadOnlyAccess, ReadOnlyAccess]
    max_duration: 1h
    approval: leads
  - {name: bg, break_glass: true, principals: {users: [alice]}, accounts: ["*"],
     permission_sets: [X], max_duration: 1h}
""",
        source="w.yaml",
    )
    assert result.ok
    assert result.policy is not None
    assert [str(w) for w in result.warnings] == [
        "w.yaml:1: warning: auditor_groups: no auditor groups: only admins can read the audit "
        "trail",
        "w.yaml:4: warning: approval_rules[1].name: approval rule 'spare' is not used by any "
        "eligibility rule",
        "w.yaml:9: warning: eligibility[0].permission_sets[1]: 'ReadOnlyAccess' listed twice "
        "(also at permission_sets[0])",
        "w.yaml:12: warning: eligibility[1].review_groups: break-glass grants will have no "
        "reviewers: set review_groups or auditor_groups",
    ]
    assert result.policy.warnings == result.warnings


REACH = """\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - name: two-leads
    approver_groups: [sre-leads, security]
    required_approvals: {n}
eligibility:
  - {{name: a, principals: {{groups: [sre], users: [zed]}}, accounts: ["*"],
     permission_sets: [X], max_duration: 1h, approval: two-leads}}
"""


@pytest.mark.parametrize(
    ("required", "members", "warning"),
    [
        pytest.param(2, {"sre-leads": ["bob", "frank", "grace"]}, None, id="2-of-3"),
        pytest.param(
            3, {"sre-leads": ["bob", "frank"], "security": ["sam"]}, None, id="groups-add-up"
        ),
        pytest.param(
            3,
            {"sre-leads": ["bob", "frank"], "security": ["bob"]},
            "have only 2 distinct member(s)",
            id="same-person-in-two-groups",
        ),
        pytest.param(
            3, {"sre-leads": ["bob", "frank"], "security": ["Bob"]}, None, id="Bob-is-not-bob"
        ),
        pytest.param(
            4,
            {"sre-leads": ["bob", "frank", "grace"]},
            "have only 3 distinct member(s) (unknown group(s): security)",
            id="unknown-group",
        ),
        pytest.param(
            2,
            {"sre-leads": ["bob", "frank"], "sre": ["alice", "bob"]},
            "from 2 people, but bob can also request under it",
            id="requester-overlap",
        ),
        pytest.param(
            2,
            {"sre-leads": ["bob", "zed"]},
            "from 2 people, but zed can also request under it",
            id="user-principal-overlap",
        ),
        pytest.param(
            2,
            {"sre-leads": ["bob", "frank", "grace"], "sre": ["bob"]},
            None,
            id="overlap-but-enough-others",
        ),
    ],
)
def test_reachability_warnings(
    required: int, members: dict[str, list[str]], warning: str | None
) -> None:
    text = REACH.format(n=required).encode()
    policy = parse_policy(text, source="r.yaml", group_members=members)
    found = [w for w in policy.warnings if w.field.endswith("required_approvals")]
    if warning is None:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0].line == 6
        assert warning in found[0].message


def test_errors_say_whether_retrying_helps(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError) as missing:
        load_policy(tmp_path / "nope.yaml")
    assert missing.value.retryable is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 2\n")
    with pytest.raises(PolicyValidationError) as invalid:
        load_policy(bad)
    assert invalid.value.retryable is False
    assert invalid.value.issues == (
        Issue(str(bad), 1, "schema_version", "Input should be 1 (got 2)"),
    )
    assert f"{bad}:1: schema_version: Input should be 1 (got 2)" in str(invalid.value)
    for error in (missing.value, invalid.value):
        assert isinstance(error, PolicyError)
        assert isinstance(error, ElevateError)
