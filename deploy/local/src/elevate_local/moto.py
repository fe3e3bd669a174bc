"""moto in server mode, reached by boto3 over real HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field

from moto.server import ThreadedMotoServer

from elevate_local.ports import free_port, wait_for_port


@dataclass
class MotoServer:
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    _server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port, timeout=30, what="moto")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
