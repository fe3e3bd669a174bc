"""Which AWS operations Elevate's code can call, read from the code, and which IAM actions
its policies in deploy/aws/iam/ grant — for tests/unit/test_iam_policy.py and the suite's
check of what the fault proxy saw (tests/conftest.py).

A service's code is its package, plus elevate_core.directory when it builds a directory.
The AWS services it talks to are those it creates clients for (`….client("sso-admin")`),
and an operation counts as used where the code names it: a method of such a client
(called or passed on, e.g. to `asyncio.to_thread`), a paginator or waiter, or the
operation's own name as a string (grant-worker labels calls, and dispatches some by name).
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "deploy/aws/iam"
DIRECTORY = ROOT / "libs/elevate-core/src/elevate_core/directory"
SERVICES = ("request-api", "approval", "grant-worker", "audit-ingest", "notifier")

# Operations authorised by another action than their own name (Service Authorization
# Reference): none of these is called today; the table says how one would be granted.
AUTHORISED_BY = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
}


@functools.cache
def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def iam_prefix(service: str) -> str:
    return str(_model(service).metadata.get("signingName") or _model(service).endpoint_prefix)


def action_of(service: str, operation: str) -> str:
    return AUTHORISED_BY.get((service, operation), f"{iam_prefix(service)}:{operation}")


def service_of_target(target_prefix: str) -> str | None:
    """The botocore service whose JSON protocol uses this `X-Amz-Target` prefix."""
    for service in ("sso-admin", "identitystore", "organizations", "sqs", "sts"):
        if _model(service).metadata.get("targetPrefix") == target_prefix:
            return service
    return None


def package_dir(service: str) -> Path:
    return ROOT / "services" / service / "src" / f"elevate_{service.replace('-', '_')}"


def code_of(service: str) -> list[Path]:
    files = sorted(package_dir(service).rglob("*.py"))
    if any("elevate_core.directory" in f.read_text(encoding="utf-8") for f in files):
        files += sorted(DIRECTORY.rglob("*.py"))
    return files


def _trees(files: Iterable[Path]) -> Iterator[tuple[Path, ast.AST]]:
    for f in files:
        yield f, ast.parse(f.read_text(encoding="utf-8"), filename=str(f))


def clients_created(files: Iterable[Path]) -> set[str]:
    """The services named by `….client("<service>", …)` calls."""
    found: set[str] = set()
    for _, tree in _trees(files):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "client"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


@functools.cache
def _operations(service: str) -> dict[str, str]:
    """snake_case method name and CamelCase name → the operation's name."""
    names = _model(service).operation_names
    return {**{xform_name(op): op for op in names}, **{op: op for op in names}}


@functools.cache
def _client(service: str) -> Any:
    return botocore.session.get_session().create_client(
        service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def _waiters(service: str) -> list[str]:
    return list(_client(service).waiter_names)


def _waiter_operation(service: str, waiter: str) -> str:
    return str(_client(service).get_waiter(waiter).config.operation)


def used_operations(service_name: str) -> dict[tuple[str, str], list[str]]:
    """(botocore service, operation) → where the code names it (file:line)."""
    files = code_of(service_name)
    aws_services = sorted(clients_created(files))
    used: dict[tuple[str, str], list[str]] = {}
    for f, tree in _trees(files):
        for node in ast.walk(tree):
            for aws, operation in _named(node, aws_services):
                where = f"{f.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                used.setdefault((aws, operation), []).append(where)
    return used


def operations_named(source: str, aws_services: list[str]) -> set[tuple[str, str]]:
    """What a piece of code names, for the scan's own tests."""
    return {hit for node in ast.walk(ast.parse(source)) for hit in _named(node, aws_services)}


def _named(node: ast.AST, aws_services: list[str]) -> Iterator[tuple[str, str]]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        kind = node.func.attr
        if kind in ("get_paginator", "get_waiter") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                for aws in aws_services:
                    ops = _operations(aws)
                    if kind == "get_paginator" and arg.value in ops:
                        yield aws, ops[arg.value]
                    elif kind == "get_waiter" and arg.value in _waiters(aws):
                        yield aws, _waiter_operation(aws, arg.value)
    elif isinstance(node, ast.Attribute) and "_" in node.attr:
        for aws in aws_services:
            if node.attr in _operations(aws) and node.attr.islower():
                yield aws, _operations(aws)[node.attr]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        for aws in aws_services:
            if node.value[:1].isupper() and node.value in _operations(aws):
                yield aws, node.value


def policy(service: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((POLICIES / f"{service}.json").read_text())
    return document


def granted(document: dict[str, Any]) -> dict[str, str]:
    """Each Allow action → the Sid of the statement granting it."""
    out: dict[str, str] = {}
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            out[action] = statement.get("Sid", "")
    return out
