"""deploy/aws/iam/: each service's policy grants what its code calls, and nothing more
but the documented dependent actions (deploy/aws/README.md)."""

from __future__ import annotations

import json
import re
import warnings

import pytest

from tests import iam

with warnings.catch_warnings():  # parliament imports pkg_resources, which warns
    warnings.simplefilter("ignore")
    from parliament import analyze_policy_string  # type: ignore[import-untyped]

README = iam.ROOT / "deploy/aws/README.md"
EXAMPLE = {
    "${instance_id}": "ssoins-1234567890abcdef",
    "${identity_store_id}": "d-1234567890",
    "${identity_center_account_id}": "111122223333",
    "${trail_bucket}": "org-trail-111122223333",
    "${trail_queue_arn}": "arn:aws:sqs:us-east-1:111122223333:org-trail-notices",
}
WRITES = re.compile(r":(Create|Delete|Put|Provision|Update)")


def documented_dependent() -> dict[str, set[str]]:
    """The README's table: dependent action → the actions that need it."""
    section = README.read_text(encoding="utf-8").split("## Dependent actions", 1)[1]
    rows = re.findall(r"^\| `([a-z0-9-]+:\w+)` \| ([^|]+) \|", section, re.MULTILINE)
    return {action: set(re.findall(r"`([a-z0-9-]+:\w+)`", needs)) for action, needs in rows}


def test_the_scan_sees_the_calls_the_workers_make() -> None:
    """The scan itself: a few calls known to be in the code (else it could pass empty)."""
    grant_worker = {iam.action_of(*k) for k in iam.used_operations("grant-worker")}
    assert {"sso:CreateAccountAssignment", "sso:ListAccountAssignmentsForPrincipal"} <= (
        grant_worker
    )
    audit = {iam.action_of(*k) for k in iam.used_operations("audit-ingest")}
    assert audit == {
        "s3:GetObject",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
    }


def test_the_scan_reads_calls_paginators_waiters_references_and_names() -> None:
    source = """
s3.get_object(Bucket=b, Key=k)
await asyncio.to_thread(sqs.delete_message, QueueUrl=u)
s3.get_paginator("list_objects_v2")
s3.get_waiter("object_exists")
label = "ReceiveMessage"
smtp.send_message(mail)
"""
    # Only the services the code makes clients for: without an SQS client, send_message and
    # the "ReceiveMessage" label are not AWS calls.
    assert iam.operations_named(source, ["s3"]) == {
        ("s3", "GetObject"),
        ("s3", "ListObjectsV2"),
        ("s3", "HeadObject"),
    }
    named = iam.operations_named(source, ["s3", "sqs"])
    assert {("sqs", "DeleteMessage"), ("sqs", "ReceiveMessage"), ("sqs", "SendMessage")} <= named
    assert {iam.action_of(*k) for k in named} >= {"s3:ListBucket", "s3:GetObject"}


@pytest.mark.parametrize("service", iam.SERVICES)
def test_every_call_has_its_action(service: str) -> None:
    granted = iam.granted(iam.policy(service))
    missing = {
        iam.action_of(*key): where
        for key, where in iam.used_operations(service).items()
        if iam.action_of(*key) not in granted
    }
    assert missing == {}, f"deploy/aws/iam/{service}.json lacks what the code calls"


@pytest.mark.parametrize("service", iam.SERVICES)
def test_nothing_is_granted_that_nothing_uses(service: str) -> None:
    used = {iam.action_of(*key) for key in iam.used_operations(service)}
    dependent = documented_dependent()
    unused = set(iam.granted(iam.policy(service))) - used
    undocumented = sorted(a for a in unused if a not in dependent)
    assert undocumented == [], f"deploy/aws/iam/{service}.json grants what no code calls"
    for action in unused:  # a dependent action only beside what needs it
        assert dependent[action] & used, (action, dependent[action])


def test_dependent_actions_are_documented_with_what_needs_them() -> None:
    dependent = documented_dependent()
    assert set(dependent) == {"iam:GetSAMLProvider", "iam:UpdateSAMLProvider"}
    assert all(needs for needs in dependent.values())


@pytest.mark.parametrize("service", iam.SERVICES)
def test_no_wildcards_and_writes_stay_on_the_instance(service: str) -> None:
    for statement in iam.policy(service)["Statement"]:
        actions = statement["Action"]
        assert isinstance(actions, list), statement
        assert all("*" not in a for a in actions), statement
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        if any(WRITES.search(a) for a in actions):
            resources = statement["Resource"]
            assert "*" not in ([resources] if isinstance(resources, str) else resources)


@pytest.mark.parametrize("service", iam.SERVICES)
def test_parliament_finds_nothing(service: str) -> None:
    text = (iam.POLICIES / f"{service}.json").read_text(encoding="utf-8")
    for placeholder, value in EXAMPLE.items():
        text = text.replace(placeholder, value)
    assert "${" not in text, "a placeholder the README does not list"
    findings = analyze_policy_string(text).findings
    assert [(f.issue, f.detail) for f in findings] == []


def test_parliament_would_flag_a_mistake() -> None:
    """The control above can fail: an unknown action and a needless * are findings."""
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["sso:CreateAccountAssignmnt"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["identitystore:IsMemberInGroups"], "Resource": "*"},
        ],
    }
    issues = {f.issue for f in analyze_policy_string(json.dumps(document)).findings}
    assert {"UNKNOWN_ACTION", "RESOURCE_STAR"} <= issues
