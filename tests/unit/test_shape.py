"""Source code stays in pieces that read on their own: no function or method over 60 lines.

ruff's C901/PLR0915 bound branching and statement counts; this bounds plain length, which
they miss (a long run of straight-line setup). Alembic migrations are exempt: a migration
is one long, flat list of DDL that is never edited after it ships.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("services/*/src", "libs/*/src", "deploy/local/src", "bench")
MAX_LINES = 60

# Functions still too long, as "path::qualified.name", waiting for their refactor on
# another branch. The list may only shrink: an entry that is no longer too long fails too.
ALLOWED: set[str] = set()


def _is_migration(path: Path) -> bool:
    return "migrations" in path.parts


def long_functions(source: str, label: str) -> dict[str, int]:
    """Every function or method in `source` over MAX_LINES lines, as "label::qualname": lines.

    Nested functions and methods count on their own, named through what encloses them."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                length = child.end_lineno - child.lineno + 1
                if length > MAX_LINES:
                    found[f"{label}::{name}"] = length
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=label), "")
    return found


def _source_files() -> list[Path]:
    files = [
        path
        for pattern in SOURCE_DIRS
        for directory in sorted(ROOT.glob(pattern))
        for path in sorted(directory.rglob("*.py"))
        if not _is_migration(path.relative_to(ROOT))
    ]
    assert files, f"no source under {ROOT}"
    return files


def _too_long_in_tree() -> dict[str, int]:
    found: dict[str, int] = {}
    for path in _source_files():
        found |= long_functions(path.read_text(), path.relative_to(ROOT).as_posix())
    return found


def against_allowed(too_long: dict[str, int], allowed: set[str]) -> tuple[list[str], list[str]]:
    """What is too long without being allowed ("name (N lines)"), and what is allowed
    without being too long any more."""
    new = [f"{name} ({too_long[name]} lines)" for name in sorted(too_long.keys() - allowed)]
    return new, sorted(allowed - too_long.keys())


def test_no_function_is_longer_than_60_lines() -> None:
    new, _ = against_allowed(_too_long_in_tree(), ALLOWED)
    assert not new, f"split these into helpers of at most {MAX_LINES} lines:\n" + "\n".join(new)


def test_allowed_list_only_names_functions_still_too_long() -> None:
    _, stale = against_allowed(_too_long_in_tree(), ALLOWED)
    assert not stale, "no longer too long (or gone): remove from ALLOWED:\n" + "\n".join(stale)


def _function(name: str, lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}() -> None:\n{body}"


def test_long_functions_catches_what_is_over_the_limit() -> None:
    source = (
        _function("fits", MAX_LINES)
        + _function("too_long", MAX_LINES + 1)
        + "class Service:\n"
        + "    @staticmethod\n"
        + _function("method", MAX_LINES + 1, indent="    ")
        + "async def outer() -> None:\n"
        + _function("inner", MAX_LINES + 1, indent="    ")
    )
    assert long_functions(source, "pkg/mod.py") == {
        "pkg/mod.py::too_long": MAX_LINES + 1,
        "pkg/mod.py::Service.method": MAX_LINES + 1,
        "pkg/mod.py::outer": MAX_LINES + 2,
        "pkg/mod.py::outer.inner": MAX_LINES + 1,
    }


def test_the_allowed_list_can_only_shrink() -> None:
    too_long = {"a.py::f": 70, "a.py::g": 61}
    assert against_allowed(too_long, {"a.py::f", "a.py::g"}) == ([], [])
    assert against_allowed(too_long, {"a.py::f"}) == (["a.py::g (61 lines)"], [])
    assert against_allowed(too_long, {"a.py::f", "a.py::g", "b.py::h"}) == ([], ["b.py::h"])


def test_migrations_are_exempt_and_the_rest_is_scanned() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in _source_files()}
    assert "bench/policy.py" in files
    assert "deploy/local/src/elevate_local/supervisor.py" in files
    assert not any("/migrations/" in name for name in files)
