"""Policy errors and the issues (errors and warnings) a policy file can carry.

Every issue names the file, the line and the field, so an operator (or a GitOps
pipeline) can go straight to the place to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from elevate_core.errors import ElevateError

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a policy file. `line` is 1-based; None when unknown."""

    source: str
    line: int | None
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        kind = "warning: " if self.severity == "warning" else ""
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {kind}{field}{self.message}"


class PolicyError(ElevateError):
    """Root of every policy error. `retryable` says whether reading again could help."""


class PolicyFileError(PolicyError):
    """The policy file could not be read (missing, unreadable, mid-swap).

    Retryable: a ConfigMap being swapped or a volume being mounted can fix itself.
    """

    retryable = True

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: cannot read policy: {reason}")
        self.source = source
        self.reason = reason


class PolicyValidationError(PolicyError):
    """The file was read but is not a valid policy. Not retryable: the text must change."""

    retryable = False

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        lines = "\n".join(str(issue) for issue in self.issues)
        super().__init__(f"invalid policy ({len(self.issues)} error(s)):\n{lines}")
