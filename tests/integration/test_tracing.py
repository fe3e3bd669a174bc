"""One trace spans the producing and the consuming process, linked by `traceparent`,
as exported over real OTLP/HTTP to a collector the test runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from elevate_local import runs
from elevate_local.kafka import KafkaBroker
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import create_topics

ROOT = Path(__file__).resolve().parents[2]


class Collector:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in rs.resource.attributes
                        if a.key == "service.name"
                    )
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            collector.spans.append(
                                {
                                    "service": service,
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "kind": span.kind,
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


async def test_one_trace_spans_producer_and_consumer_processes(
    collector: Collector, kafka: KafkaBroker, topic_prefix: str, tmp_path: Path
) -> None:
    await create_topics(
        kafka.endpoint(), f"{topic_prefix}elevate.requests.v1", f"{topic_prefix}elevate.dlq.v1"
    )

    def run(cmd: str) -> subprocess.Popen[bytes]:
        url = f"sqlite+aiosqlite:///{tmp_path / (cmd + '.db')}"
        return runs.spawn(
            [
                sys.executable,
                "-m",
                "tests.integration.trace_worker",
                cmd,
                url,
                topic_prefix,
                collector.endpoint,
            ],
            cwd=ROOT,
            env={**os.environ, **kafka.endpoint().environment()},
        )

    consumer = run("consume")
    producer = run("produce")
    assert await asyncio.to_thread(producer.wait, 120) == 0
    assert await asyncio.to_thread(consumer.wait, 120) == 0

    spans = {s["name"]: s for s in collector.spans}
    root = spans["POST /v1/requests/{id}/revoke"]
    publish = spans[f"publish {topic_prefix}elevate.requests.v1"]
    process = spans[f"process {topic_prefix}elevate.requests.v1"]
    handled = spans["revoke grant"]
    assert {root["service"], publish["service"]} == {"trace-produce"}
    assert {process["service"], handled["service"]} == {"trace-consume"}
    assert (
        len({root["trace_id"], publish["trace_id"], process["trace_id"], handled["trace_id"]}) == 1
    )
    assert publish["parent"] == root["span_id"]
    assert process["parent"] == publish["span_id"]
    assert handled["parent"] == process["span_id"]
