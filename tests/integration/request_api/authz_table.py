"""The authorisation table of docs/request-api.md, read by the tests that hold the app to
it (the route-enumerating test and the schema fuzzer): one table, in the operator docs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs/request-api.md"
PORTAL_DOC = DOC.parent / "portal.md"
HEADING = "## Authorisation"
CALLERS = (
    "anonymous",
    "requester",
    "another user",
    "approver",
    "requester as approver",
    "auditor",
    "admin",
)


@dataclass(frozen=True, slots=True)
class Row:
    method: str
    path: str  # with the app's parameter names, and {decision} spelled out
    expected: dict[str, int]  # caller → status

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def _cells(doc: Path, heading: str) -> list[tuple[str, str, list[str]]]:
    text = doc.read_text()
    section = re.split(r"\n##+ ", text[text.index(heading) :], maxsplit=2)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| route |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert tuple(columns) == CALLERS, columns
    found = []
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        method, path = cells[0].strip("`").split(" ", 1)
        assert len(cells[1:]) == len(CALLERS), line
        found.append((method, path, cells[1:]))
    assert found, f"no authorisation table under {heading!r} in {doc}"
    return found


def rows(doc: Path = DOC) -> list[Row]:
    """The table's rows, in order; a malformed table fails loudly."""
    return [
        Row(method, path, dict(zip(CALLERS, map(int, cells), strict=True)))
        for method, path, cells in _cells(doc, HEADING)
    ]


@dataclass(frozen=True, slots=True)
class PortalRow:
    method: str
    path: str
    expected: dict[str, str]  # caller → status, or `login` (sent to sign in)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def portal_rows(doc: Path = PORTAL_DOC) -> list[PortalRow]:
    """The portal's table (docs/portal.md), callers signed in with portal sessions."""
    return [
        PortalRow(method, path, dict(zip(CALLERS, cells, strict=True)))
        for method, path, cells in _cells(doc, HEADING)
    ]
