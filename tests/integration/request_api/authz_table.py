"""The authorisation table of docs/request-api.md, read by the tests that hold the app to
it (the route-enumerating test and the schema fuzzer): one table, in the operator docs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs/request-api.md"
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


def rows(doc: Path = DOC) -> list[Row]:
    """The table's rows, in order; a malformed table fails loudly."""
    text = doc.read_text()
    section = re.split(r"\n##+ ", text[text.index(HEADING) :], maxsplit=2)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| route |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert tuple(columns) == CALLERS, columns
    found: list[Row] = []
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        method, path = cells[0].strip("`").split(" ", 1)
        statuses = [int(c) for c in cells[1:]]
        assert len(statuses) == len(CALLERS), line
        found.append(Row(method, path, dict(zip(CALLERS, statuses, strict=True))))
    assert found, f"no authorisation table under {HEADING!r} in {doc}"
    return found
