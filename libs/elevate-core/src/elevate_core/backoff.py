"""Jittered exponential backoff ("full jitter"), for retries that many replicas share."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 30.0) -> float:
    """Seconds to wait before retry number `attempt` (1-based)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)
