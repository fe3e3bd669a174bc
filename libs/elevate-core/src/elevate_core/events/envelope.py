"""CloudEvents 1.0 Kafka binding, binary mode: value = JSON data, `ce_*` headers,
`content-type`, W3C `traceparent`; key = the subject (request id).

Small enough to own rather than depend on an SDK; `decode` is strict because a
consumer must send what it cannot trust to the dead-letter topic, not guess.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from elevate_core.errors import ElevateError
from elevate_core.events.base import Event, UnknownEventTypeError, event_class_for

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
Headers = list[tuple[str, bytes]]


class EnvelopeError(ElevateError):
    """A message is not a valid Elevate CloudEvent. Never retryable: dead-letter it."""

    retryable = False


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None
    data: dict[str, Any]
    traceparent: str | None = None
    tracestate: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def event(self) -> Event:
        """The typed event; raises EnvelopeError when the data does not fit its class."""
        try:
            cls = event_class_for(self.type)
        except UnknownEventTypeError:
            raise EnvelopeError(f"unknown ce_type {self.type!r}") from None
        try:
            return cls.model_validate(self.data)
        except ValidationError as exc:
            raise EnvelopeError(
                f"{self.type}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from None


def new_envelope(
    event: Event,
    *,
    source: str,
    subject: str | None,
    time: datetime | None = None,
    traceparent: str | None = None,
    id: str | None = None,
) -> Envelope:
    return Envelope(
        id=id or str(uuid.uuid4()),
        source=source,
        type=event.ce_type,
        time=time or datetime.now(UTC),
        subject=subject,
        data=event.model_dump(mode="json"),
        traceparent=traceparent,
    )


def encode(envelope: Envelope) -> tuple[bytes, Headers]:
    """Value and headers for Kafka."""
    headers: Headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", envelope.id.encode()),
        ("ce_source", envelope.source.encode()),
        ("ce_type", envelope.type.encode()),
        ("ce_time", envelope.time.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    if envelope.subject is not None:
        headers.append(("ce_subject", envelope.subject.encode()))
    if envelope.traceparent:
        headers.append(("traceparent", envelope.traceparent.encode()))
    if envelope.tracestate:
        headers.append(("tracestate", envelope.tracestate.encode()))
    headers.extend((k, v.encode()) for k, v in envelope.extra_headers.items())
    value = json.dumps(envelope.data, separators=(",", ":"), sort_keys=True).encode()
    return value, headers


def header_map(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers or ():
        try:
            out[key] = value.decode() if isinstance(value, bytes | bytearray) else str(value)
        except UnicodeDecodeError:
            raise EnvelopeError(f"header {key!r} is not UTF-8") from None
    return out


def decode(value: bytes | None, headers: Any) -> Envelope:
    """Parse a binary-mode CloudEvent; EnvelopeError on anything malformed."""
    h = header_map(headers)
    if h.get("ce_specversion") != SPEC_VERSION:
        raise EnvelopeError(
            f"ce_specversion must be {SPEC_VERSION}, got {h.get('ce_specversion')!r}"
        )
    for required in ("ce_id", "ce_source", "ce_type"):
        if not h.get(required):
            raise EnvelopeError(f"missing header {required}")
    content_type = h.get("content-type", CONTENT_TYPE).split(";")[0].strip()
    if content_type != CONTENT_TYPE:
        raise EnvelopeError(f"content-type must be {CONTENT_TYPE}, got {content_type!r}")
    try:
        time = datetime.fromisoformat(h["ce_time"]) if h.get("ce_time") else datetime.now(UTC)
    except ValueError:
        raise EnvelopeError(f"ce_time is not RFC 3339: {h['ce_time']!r}") from None
    data = parse_json_object(value)
    known = {
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
        "traceparent",
        "tracestate",
    }
    return Envelope(
        id=h["ce_id"],
        source=h["ce_source"],
        type=h["ce_type"],
        time=time if time.tzinfo else time.replace(tzinfo=UTC),
        subject=h.get("ce_subject"),
        data=data,
        traceparent=h.get("traceparent"),
        tracestate=h.get("tracestate"),
        extra_headers={k: v for k, v in h.items() if k not in known},
    )


# orjson turns an integer beyond 64 bits into a float (it would lose digits): a value with
# a run of 20 digits anywhere, and anything orjson refuses, is read by json, as before.
# (Digits mapped to "0", then one substring search: a tenth of a regular expression's cost.)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20


def _has_long_number(value: bytes) -> bool:
    return value.translate(_DIGITS_AS_ZERO).find(_TWENTY_DIGITS) >= 0


def parse_json_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise EnvelopeError("empty message value")
    try:
        if _has_long_number(value):
            data = json.loads(value)
        else:
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError:
                data = json.loads(value)  # what json accepts stays accepted (NaN, surrogates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EnvelopeError("value must be a JSON object")
    return data
