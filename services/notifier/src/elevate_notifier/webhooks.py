"""Signed webhooks: `Elevate-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`
with `Elevate-Timestamp` (Unix seconds) and `Elevate-Delivery` (the delivery's id, the
same on every retry). A receiver recomputes the HMAC over the exact bytes received,
compares in constant time, refuses a timestamp outside its tolerance (a replay) and may
drop a delivery id it has already seen. `verify` is that receiver's check."""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP, SIGNATURE, DELIVERY = "Elevate-Timestamp", "Elevate-Signature", "Elevate-Delivery"
TOLERANCE_SECONDS = 300


class WebhookRejected(Exception):
    """What a receiver answers 401 for."""


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def signed_headers(
    key: bytes, body: bytes, *, delivery: str, now: float | None = None
) -> dict[str, str]:
    at = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        TIMESTAMP: str(at),
        SIGNATURE: signature(key, at, body),
        DELIVERY: delivery,
    }


def verify(
    key: bytes,
    *,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> None:
    """Raise `WebhookRejected` unless `body` was signed with `key` within `tolerance`."""
    if not timestamp or not timestamp.isdigit() or not signature_header:
        raise WebhookRejected("missing or malformed signature headers")
    at = int(timestamp)
    if abs((time.time() if now is None else now) - at) > tolerance:
        raise WebhookRejected("timestamp outside the tolerance (a replay?)")
    expected = signature(key, at, body)
    # Several signatures (during a key rotation) may come comma-separated.
    if not any(hmac.compare_digest(expected, s.strip()) for s in signature_header.split(",")):
        raise WebhookRejected("signature does not match")
