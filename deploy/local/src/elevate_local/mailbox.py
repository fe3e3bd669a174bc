"""A local mailbox: a real SMTP server (aiosmtpd) that keeps what it receives, for `make
dev` (each mail is printed) and the notifier's tests (STARTTLS required, with the local
CA's localhost certificate, so the notifier's TLS path is the production one).

    python -m elevate_local.mailbox --port 1025 [--starttls DATA_DIR]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from elevate_local.tls import BrokerTls


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"]).strip()  # (a long one is folded after "Subject:")

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


@dataclass
class Mailbox:
    """What the server accepted, in order (thread-safe)."""

    received: list[Received] = field(default_factory=list)
    echo: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        item = Received(envelope.mail_from, list(envelope.rcpt_tos), parsed)
        with self._lock:
            self.received.append(item)
        if self.echo:
            print(f"mail to {', '.join(item.recipients)}: {item.subject}", flush=True)
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if address in r.recipients]


class MailServer:
    """The SMTP server on `host`:`port` (0: a free one); `tls_dir` turns STARTTLS on
    and makes it required before any mail is accepted."""

    def __init__(
        self,
        port: int = 0,
        *,
        tls_dir: Path | None = None,
        echo: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.mailbox = Mailbox(echo=echo)
        self.tls = BrokerTls(tls_dir).ensure() if tls_dir is not None else None
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.keystore_file)
        self.port = port
        self._context = context
        self._controller: Controller | None = None

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls is not None else None

    def start(self) -> MailServer:
        if self.port == 0:
            from elevate_local.ports import free_port

            self.port = free_port()
        self._controller = Controller(
            self.mailbox,
            hostname=self.host,
            port=self.port,
            tls_context=self._context,
            require_starttls=self._context is not None,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--host", default="127.0.0.1", help="(docker-compose.yml: 0.0.0.0)")
    parser.add_argument("--starttls", type=Path, help="TLS material directory")
    args = parser.parse_args()
    server = MailServer(args.port, tls_dir=args.starttls, echo=True, host=args.host).start()
    print(f"mailbox listening on {args.host}:{server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
