"""Schema compatibility within a `v1` event: the committed schemas in `docs/events/` are
the contract, and a regenerated schema may only add optional fields.

`compatibility_problems(old, new)` lists what would break a reader or writer of the old
schema during a rolling upgrade: a removed field (old readers or writers still use it), a
changed type or narrowed enum (old data no longer fits), a field newly required or a new
required field (old writers do not send it). Added optional fields, widened enums' docs and
changed titles or descriptions are not problems.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _resolve(schema: Schema, root: Schema) -> Schema:
    seen = 0
    while "$ref" in schema and seen < 32:
        ref = str(schema["$ref"])
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        schema = root.get("$defs", {})[ref.removeprefix("#/$defs/")]
        seen += 1
    return schema


def _variants(schema: Schema, root: Schema) -> list[Schema]:
    """`anyOf`/`oneOf` alternatives (Optional[X] is anyOf [X, null]), resolved."""
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [v for s in schema[key] for v in _variants(s, root)]
    return [schema]


def _shape(schema: Schema, root: Schema) -> str:
    """A short type description for messages."""
    s = _resolve(schema, root)
    if "const" in s:
        return f"const {s['const']!r}"
    if "enum" in s:
        return f"enum {sorted(map(str, s['enum']))}"
    kind = s.get("type", "any")
    return f"{kind}({s['format']})" if "format" in s else str(kind)


def _values(schema: Schema) -> set[str] | None:
    if "const" in schema:
        return {str(schema["const"])}
    if "enum" in schema:
        return {str(v) for v in schema["enum"]}
    return None


def _compare(
    old: Schema, new: Schema, *, old_root: Schema, new_root: Schema, path: str
) -> list[str]:
    problems: list[str] = []
    old_vs = _variants(old, old_root)
    new_vs = _variants(new, new_root)
    for ov in old_vs:
        match = _best_match(ov, new_vs)
        if match is None:
            problems.append(
                f"{path}: type changed from {_shape(ov, old_root)} to "
                f"{' | '.join(_shape(v, new_root) for v in new_vs)}"
            )
            continue
        problems.extend(_compare_one(ov, match, old_root=old_root, new_root=new_root, path=path))
    return problems


def _best_match(old: Schema, candidates: list[Schema]) -> Schema | None:
    kind = old.get("type")
    for cand in candidates:
        if cand.get("type") == kind and cand.get("format") == old.get("format"):
            return cand
    return None


def _compare_one(
    old: Schema, new: Schema, *, old_root: Schema, new_root: Schema, path: str
) -> list[str]:
    problems: list[str] = []
    old_values, new_values = _values(old), _values(new)
    if old_values is not None:
        missing = old_values - (new_values if new_values is not None else old_values)
        if missing:
            problems.append(f"{path}: allowed values removed: {sorted(missing)}")
    elif new_values is not None:
        problems.append(f"{path}: narrowed from {_shape(old, old_root)} to {_shape(new, new_root)}")
    if old.get("type") == "object":
        problems.extend(_compare_object(old, new, old_root=old_root, new_root=new_root, path=path))
    if old.get("type") == "array" and "items" in old:
        problems.extend(
            _compare(
                old["items"],
                new.get("items", {}),
                old_root=old_root,
                new_root=new_root,
                path=f"{path}[]",
            )
        )
    return problems


def _compare_object(
    old: Schema, new: Schema, *, old_root: Schema, new_root: Schema, path: str
) -> list[str]:
    problems: list[str] = []
    old_props: Schema = old.get("properties", {})
    new_props: Schema = new.get("properties", {})
    old_required = set(old.get("required", ()))
    new_required = set(new.get("required", ()))
    for name, schema in old_props.items():
        where = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{where}: field removed")
            continue
        problems.extend(
            _compare(schema, new_props[name], old_root=old_root, new_root=new_root, path=where)
        )
    for name in sorted(new_required - old_required):
        where = f"{path}.{name}" if path else name
        if name in old_props:
            problems.append(f"{where}: optional field made required")
        else:
            problems.append(f"{where}: new field is required (within v1 only optional ones)")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        problems.append(f"{path or '(event)'}: unknown fields now refused")
    return problems


def compatibility_problems(old: Schema, new: Schema) -> list[str]:
    """What in `new` breaks users of `old` (empty: compatible)."""
    return _compare(old, new, old_root=old, new_root=new, path="")
