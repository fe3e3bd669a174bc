"""Structured JSON logs (with trace and request ids) and OpenTelemetry tracing.

Tracing is on in-process always (so `traceparent` flows across Kafka hops and into
logs), but nothing is exported unless an OTLP endpoint is configured.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

request_id_var: ContextVar[str | None] = ContextVar("elevate_request_id", default=None)
_provider: TracerProvider | None = None

# Never let these reach a log line, whatever a caller passes in `extra`.
_SECRET_KEYS = {
    "authorization",
    "password",
    "secret",
    "token",
    "aws_secret_access_key",
    "access_token",
    "id_token",
    "client_secret",
}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_ctx = trace.get_current_span().get_span_context()
        if span_ctx.is_valid:
            payload["trace_id"] = f"{span_ctx.trace_id:032x}"
            payload["span_id"] = f"{span_ctx.span_id:016x}"
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key.startswith("ctx_"):
                name = key[4:]
                payload[name] = "[redacted]" if name.lower() in _SECRET_KEYS else value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.service = service


def configure_logging(*, service: str, level: str = "INFO", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service) if json_logs else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # aiokafka logs every failed connect at ERROR; our components report Kafka outages
    # themselves (once per retry, with backoff), in logs, /healthz and metrics.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def configure_tracing(*, service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install a tracer provider once per process; export over OTLP/HTTP if configured."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


def tracer() -> trace.Tracer:
    # Spans must be real (valid ids) even before a service configured tracing, or no
    # traceparent would travel with the events.
    if _provider is None:
        configure_tracing(service="elevate", otlp_endpoint=None)
    return trace.get_tracer("elevate")


def current_traceparent() -> tuple[str | None, str | None]:
    """The W3C headers of the current span, to store with an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def context_from(traceparent: str | None, tracestate: str | None = None) -> Context:
    carrier = {}
    if traceparent:
        carrier["traceparent"] = traceparent
    if tracestate:
        carrier["tracestate"] = tracestate
    return propagate.extract(carrier)
