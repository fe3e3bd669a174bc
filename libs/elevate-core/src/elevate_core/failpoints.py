"""Crash fail points for crash-safety tests.

`ELEVATE_FAIL_POINTS="name"` or `"name@N"` (the Nth hit) makes `failpoint(name)`
SIGKILL the process there — only when ELEVATE_MODE=test; in any other mode the
settings refuse the variable and this function does nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def _armed() -> dict[str, int]:
    if os.environ.get("ELEVATE_MODE") != "test":
        return {}
    armed: dict[str, int] = {}
    for item in filter(
        None, (p.strip() for p in os.environ.get("ELEVATE_FAIL_POINTS", "").split(","))
    ):
        name, _, nth = item.partition("@")
        armed[name] = int(nth) if nth.isdigit() else 1
    return armed


def failpoint(name: str) -> None:
    armed = _armed()
    if name not in armed:
        return
    _hits[name] += 1
    if _hits[name] >= armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
