"""Durations in policy files: a compact form such as "30m", "1h", "8h", "1h30m", "2d".

Grammar: one or more `<integer><unit>` parts, units in decreasing order, each at
most once: `d` (days), `h` (hours), `m` (minutes), `s` (seconds). No spaces, no
fractions, no sign; the total must be positive. ISO-8601 ("PT4H") is not accepted,
so every duration in a policy reads the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# Far beyond any sensible grant or timeout, but short of timedelta's limits.
_MAX = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """Parse "1h30m" into a timedelta. Raises ValueError with an operator-facing message."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(
            f"invalid duration {text!r}: use e.g. '30m', '1h', '8h', '1h30m' or '2d' "
            "(units d, h, m, s, largest first)"
        )
    days, hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    if value > _MAX:
        raise ValueError(f"invalid duration {text!r}: longer than {_MAX.days} days")
    return value


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration: timedelta(hours=1, minutes=30) -> "1h30m"."""
    total = int(value.total_seconds())
    if total <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
