"""The request history as CSV, safe to open in a spreadsheet.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be read as a
formula by Excel, LibreOffice or Sheets (CSV injection, OWASP): such a cell is prefixed
with `'`, which makes it text. Everything else is written as is, quoted by the csv module
where needed (justifications may hold line breaks).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _time(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _names(value: str | None) -> str:
    """A list of names: the JSON array text the export's rows carry (`store.page_rows`)."""
    return value or "[]"


COLUMNS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("id", lambda r: r.id),
    ("status", lambda r: r.status),
    ("requester", lambda r: r.requester_user_name),
    ("requester_id", lambda r: r.requester_user_id),
    ("requester_email", lambda r: r.requester_email),
    ("account_id", lambda r: r.account_id),
    ("account_name", lambda r: r.account_name),
    ("ou_path", lambda r: r.ou_path),
    ("permission_set", lambda r: r.permission_set_name),
    ("permission_set_arn", lambda r: r.permission_set_arn),
    ("start", lambda r: _time(r.start)),
    ("end", lambda r: _time(r.end)),
    ("justification", lambda r: r.justification),
    ("ticket", lambda r: r.ticket),
    ("matched_rule", lambda r: r.matched_rule),
    ("approval_rule", lambda r: r.approval_rule),
    ("required_approvals", lambda r: r.required_approvals),
    ("approver_groups", lambda r: _names(r.approver_groups)),
    ("approvers", lambda r: _names(r.approvers)),
    ("break_glass", lambda r: "true" if r.break_glass else "false"),
    ("review", lambda r: r.review),
    ("policy_version", lambda r: r.policy_version),
    ("created_at", lambda r: _time(r.created_at)),
    ("updated_at", lambda r: _time(r.updated_at)),
)


def safe_cell(value: Any) -> str:
    """The cell's text, made inert if a spreadsheet would evaluate it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _lines(records: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerows([safe_cell(v) for v in record] for record in records)
    return out.getvalue()


def header() -> str:
    return _lines([[name for name, _ in COLUMNS]])


def rows(requests: Iterable[Any]) -> str:
    """CSV lines of `store.page_rows` rows."""
    return _lines([get(r) for _, get in COLUMNS] for r in requests)
