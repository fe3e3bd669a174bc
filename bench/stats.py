"""The benches' percentiles: nearest rank on the sorted samples, and the summary every
latency figure is printed as."""

from __future__ import annotations

import statistics


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50_ms": round(statistics.median(values_ms), 1),
        "p99_ms": round(pct(values_ms, 99), 1),
        "max_ms": round(max(values_ms), 1),
    }
