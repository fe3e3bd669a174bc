"""`elevate healthcheck`, the image's HEALTHCHECK: healthy only when the container's own
service answers its probe with a success."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from elevate_core.cli import main
from elevate_local.ports import free_port


class _Probe(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ELEVATE_HTTP_PORT", str(server.server_address[1]))
    yield server.server_address[1]
    server.shutdown()


def run(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(["healthcheck", *argv], out=out, err=err), out.getvalue() + err.getvalue()


def test_healthy_when_the_probe_answers(service: int) -> None:
    assert run() == (0, f"http://127.0.0.1:{service}/healthz: 200\n")


def test_unhealthy_when_the_probe_fails(service: int) -> None:
    code, said = run("--path", "/readyz")
    assert code == 1
    assert "503" in said


def test_unhealthy_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVATE_HTTP_PORT", str(free_port()))
    code, said = run("--timeout", "1")
    assert code == 1
    assert "refused" in said.lower()
