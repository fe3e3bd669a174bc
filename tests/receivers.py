"""Real local receivers for the notifier's tests: an HTTP server standing in for the Slack
Web API (slack-sdk pointed at it by its base URL), recording every call, and a webhook
receiver that checks each delivery's signature with `elevate_notifier.webhooks.verify`,
as a receiver of ours would, answering 401 to what fails it."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from elevate_notifier import webhooks


@dataclass
class SlackCall:
    method: str
    args: dict[str, Any]
    token: str
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeSlack:
    """Slack users are `U<NAME>` for `<name>@elevate.example` (the seeded emails)."""

    calls: list[SlackCall] = field(default_factory=list)
    emails: dict[str, str] = field(default_factory=dict)  # Slack user id -> email
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def user_for(self, name: str) -> str:
        user = f"U{name.upper()}"
        self.emails[user] = f"{name}@elevate.example"
        return user

    def answer(self, method: str, args: dict[str, Any], token: str) -> dict[str, Any]:
        with self._lock:
            ts = f"{1700000000 + next(self._ts)}.000100"
            answer = self._answer(method, args, ts)
            self.calls.append(SlackCall(method, args, token, answer))
        return answer

    def _answer(self, method: str, args: dict[str, Any], ts: str) -> dict[str, Any]:
        if method == "users.lookupByEmail":
            user = next((u for u, e in self.emails.items() if e == args.get("email")), None)
            return {"ok": True, "user": {"id": user}} if user else _error("users_not_found")
        if method == "users.info":
            email = self.emails.get(str(args.get("user")))
            if email is None:
                return _error("user_not_found")
            return {"ok": True, "user": {"id": args["user"], "profile": {"email": email}}}
        if method == "chat.postMessage":
            return {"ok": True, "channel": args.get("channel"), "ts": ts}
        if method in ("chat.update", "chat.postEphemeral"):
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts", ts)}
        return _error("unknown_method")

    def called(self, method: str) -> list[SlackCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def posts_about(self, request_id: str) -> list[SlackCall]:
        """chat.postMessage calls whose blocks name the request (its link or buttons)."""
        return [c for c in self.called("chat.postMessage") if request_id in json.dumps(c.args)]


def _error(code: str) -> dict[str, Any]:
    return {"ok": False, "error": code}


@dataclass
class WebhookReceiver:
    key: bytes
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # as received

    def receive(self, headers: dict[str, str], body: bytes) -> int:
        self.raw.append((headers, body))
        try:
            webhooks.verify(
                self.key,
                timestamp=headers.get(webhooks.TIMESTAMP.lower()),
                signature_header=headers.get(webhooks.SIGNATURE.lower()),
                body=body,
            )
        except webhooks.WebhookRejected as exc:
            self.rejected.append(str(exc))
            return 401
        self.accepted.append(json.loads(body))
        return 204

    def about(self, request_id: str) -> list[dict[str, Any]]:
        return [d for d in self.accepted if d.get("request_id") == request_id]


class Server:
    """A threaded HTTP server on 127.0.0.1 calling `slack` or `webhook` for each request."""

    def __init__(
        self, *, slack: FakeSlack | None = None, webhook: WebhookReceiver | None = None
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._slack(self, dict(parse_qs(urlsplit(self.path).query)))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.webhook is not None:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    self.send_response(outer.webhook.receive(headers, body))
                    self.end_headers()
                    return
                kind = self.headers.get("Content-Type", "")
                form = json.loads(body) if "json" in kind else dict(parse_qs(body.decode()))
                outer._slack(self, form)

            def log_message(self, *args: Any) -> None:
                pass

        self.slack = slack
        self.webhook = webhook
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _slack(self, handler: BaseHTTPRequestHandler, args: dict[str, Any]) -> None:
        assert self.slack is not None
        flat = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in args.items()}
        method = urlsplit(handler.path).path.rsplit("/", 1)[-1]
        token = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps(self.slack.answer(method, flat, token)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
