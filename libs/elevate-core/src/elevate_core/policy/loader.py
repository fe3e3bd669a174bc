"""Reading a policy file: YAML with line numbers, pydantic, then cross-field checks.

Every problem becomes an `Issue` naming file, line and field. The line comes from
YAML's node marks: the file is composed into nodes, each field path is mapped to
the line where it is written, and pydantic's error locations are looked up there.
"""

from __future__ import annotations

import difflib
import hashlib
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from elevate_core.errors import ElevateError
from elevate_core.policy import schema
from elevate_core.policy.errors import Issue, PolicyFileError, PolicyValidationError
from elevate_core.policy.model import FieldPath, Policy, format_path, locate
from elevate_core.policy.semantics import check_document, reachability_warnings

MAX_POLICY_BYTES = 1024 * 1024
# Bounds the work of alias expansion ("billion laughs") before pydantic sees the data.
MAX_NODES = 200_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
GroupMembers = Mapping[str, Collection[str]]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as tuple[Annotated[Model, ...], ...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: FieldPath) -> list[str]:
    """The field names allowed in the mapping at `loc` (for "did you mean" hints)."""
    model: type[BaseModel] | None = schema.PolicyDocument
    for part in loc:
        if model is None:
            return []
        if isinstance(part, str):
            field = model.model_fields.get(part)
            model = _model_in(field.annotation) if field is not None else None
    return sorted(name for name in (model.model_fields if model else {}) if name != "all")


# Error kinds raised by schema.py whose messages are complete as they stand.
_CUSTOM_KINDS = frozenset({"duration", "account_id", "ou", "ticket_pattern", "account_ref"})


def policy_version(data: bytes) -> str:
    """The policy's version: the first 12 hex digits of the sha256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of checking a policy: the policy if it is valid, and every issue."""

    source: str
    version: str
    policy: Policy | None
    errors: tuple[Issue, ...]
    warnings: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


class _TooBig(ElevateError):
    pass


def _line_map(root: yaml.Node) -> dict[FieldPath, int]:
    """Field path -> 1-based line: of the key for mapping entries, of the item for lists."""
    lines: dict[FieldPath, int] = {(): root.start_mark.line + 1}
    stack: list[tuple[yaml.Node, FieldPath]] = [(root, ())]
    visited = 0
    while stack:
        node, path = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise _TooBig
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name: str | int = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                lines[(*path, name)] = key.start_mark.line + 1
                stack.append((value, (*path, name)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                stack.append((item, (*path, index)))
    return lines


def _duplicate_keys(root: yaml.Node, source: str) -> list[Issue]:
    """YAML silently keeps the last of two equal keys; in a policy that hides mistakes."""
    issues: list[Issue] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, FieldPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG or not isinstance(key, yaml.ScalarNode):
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    issues.append(
                        Issue(
                            source,
                            line,
                            format_path((*path, key.value)),
                            f"duplicate key (first at line {first[key.value]})",
                        )
                    )
                else:
                    first[key.value] = line
                stack.append((value, (*path, key.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return issues


def _read_yaml(text: str, source: str) -> tuple[Any, dict[FieldPath, int], list[Issue]]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}, [Issue(source, 1, "", "the policy file is empty")]
        duplicates = _duplicate_keys(root, source)
        if duplicates:
            return None, {}, duplicates
        data = loader.construct_document(root)
        return data, _line_map(root), []
    finally:
        loader.dispose()


def _describe_input(value: Any) -> str:
    if isinstance(value, bool):
        return f" (got {value!r}; YAML reads yes/no/on/off/true/false as booleans: quote it)"
    if isinstance(value, str | int | float) or value is None:
        text = repr(value)
        return f" (got {text[:60]}…)" if len(text) > 60 else f" (got {text})"
    return ""


def _pydantic_issues(
    exc: ValidationError, lines: Mapping[FieldPath, int], source: str
) -> list[Issue]:
    issues: list[Issue] = []
    errors = [
        # drop pydantic's own loc entries such as "function-after[...]"
        (tuple(p for p in e["loc"] if isinstance(p, int) or "[" not in p), e)
        for e in exc.errors(include_url=False)
    ]
    for loc, error in errors:
        if error["type"] == "too_short" and any(
            len(other) > len(loc) and other[: len(loc)] == loc for other, _ in errors
        ):
            continue  # an item failed; saying the list is then empty only confuses
        kind = error["type"]
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            allowed = _fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.75)
            if close:
                message = f"unknown field (did you mean {close[0]!r}?)"
            else:
                message = f"unknown field (allowed here: {', '.join(allowed)})"
        elif not loc and kind in ("model_type", "dict_type"):
            message = "the policy must be a YAML mapping (schema_version, eligibility, ...)"
        elif kind in _CUSTOM_KINDS:
            message = error["msg"]
        else:
            message = error["msg"] + _describe_input(error.get("input"))
        issues.append(Issue(source, locate(lines, loc), format_path(loc), message))
    return issues


def _parse_yaml_bytes(data: bytes, source: str) -> tuple[Any, dict[FieldPath, int], list[Issue]]:
    """The YAML data and its line map, or the issues that stop the bytes being read."""
    if len(data) > MAX_POLICY_BYTES:
        return None, {}, [Issue(source, None, "", f"larger than {MAX_POLICY_BYTES} bytes")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, {}, [Issue(source, None, "", f"not UTF-8 text ({exc.reason})")]
    try:
        return _read_yaml(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, {}, [Issue(source, line, "", f"YAML syntax error: {problem}")]
    except yaml.YAMLError as exc:
        return None, {}, [Issue(source, None, "", f"YAML error: {exc}")]
    except _TooBig:
        return None, {}, [Issue(source, None, "", f"more than {MAX_NODES} nodes after aliases")]


def check_policy(
    data: bytes, *, source: str = "<policy>", group_members: GroupMembers | None = None
) -> CheckResult:
    """Validate policy bytes without raising: the policy (if valid) and all issues."""
    version = policy_version(data)

    def failed(*issues: Issue) -> CheckResult:
        ordered = tuple(sorted(issues, key=lambda i: (i.line or 0, i.field)))
        return CheckResult(source, version, None, ordered, ())

    raw, lines, read_issues = _parse_yaml_bytes(data, source)
    if read_issues:
        return failed(*read_issues)
    try:
        document = schema.PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        return failed(*_pydantic_issues(exc, lines, source))

    findings = check_document(document)
    errors = [
        Issue(source, locate(lines, f.path), format_path(f.path), f.message)
        for f in findings
        if f.severity == "error"
    ]
    if errors:
        return failed(*errors)
    warnings = [
        Issue(source, locate(lines, f.path), format_path(f.path), f.message, "warning")
        for f in findings
        if f.severity == "warning"
    ]
    policy = Policy(document, version=version, source=source, lines=lines)
    if group_members is not None:
        warnings.extend(reachability_warnings(policy, group_members))
    ordered = tuple(sorted(warnings, key=lambda i: (i.line or 0, i.field)))
    policy = Policy(document, version=version, source=source, lines=lines, warnings=ordered)
    return CheckResult(source, version, policy, (), ordered)


def parse_policy(
    data: bytes, *, source: str = "<policy>", group_members: GroupMembers | None = None
) -> Policy:
    """Validate policy bytes; raise PolicyValidationError listing every error."""
    result = check_policy(data, source=source, group_members=group_members)
    if result.policy is None:
        raise PolicyValidationError(result.errors)
    return result.policy


def read_policy_bytes(path: str | Path) -> bytes:
    """Read a policy file (following symlinks, as a mounted ConfigMap needs)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyFileError(str(path), exc.strerror or str(exc)) from exc
    return data


def load_policy(path: str | Path, *, group_members: GroupMembers | None = None) -> Policy:
    """Read and validate a policy file. Raises PolicyFileError or PolicyValidationError."""
    return parse_policy(read_policy_bytes(path), source=str(path), group_members=group_members)
