"""ASGI middleware at every service's edge: security headers on every answer, and a cap
on request bodies enforced before anything parses them.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware) so streamed answers (SSE) pass
through unbuffered and a refused body is never read past the cap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elevate_core.problems import PROBLEM_JSON, PROBLEM_TYPE

BODY_TOO_LARGE = PROBLEM_TYPE + "body-too-large"
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # the largest valid request body is a few KiB
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
_NO_STORE = (b"cache-control", b"no-store")


async def send_problem(
    send: Send,
    scope: Scope,
    status: int,
    *,
    title: str,
    detail: str,
    type_: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """An RFC 9457 answer straight from middleware (before any route ran)."""
    body = json.dumps(
        {
            "type": type_,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": scope.get("path", ""),
        }
    ).encode()
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """nosniff, no framing, no referrer and `Cache-Control: no-store` (unless the route
    set its own) on every answer; HSTS where TLS is expected (outside dev)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.extra = (*_ALWAYS, _HSTS) if hsts else _ALWAYS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in self.extra if h[0] not in names]
                if _NO_STORE[0] not in names:
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception:
            # Starlette answers a crash outside all middleware (no headers then): answer
            # here, then let it log the error as it does.
            if not started:
                await send_problem(
                    with_headers,
                    scope,
                    500,
                    title="Internal Server Error",
                    detail="internal error",
                    type_="about:blank",
                )
            raise


class BodyLimit:
    """Refuse (413) a request body over `max_bytes` before the app sees any of it: a
    declared Content-Length over the cap is refused unread; otherwise the body is read
    up to the cap, then handed on."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(scope, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later messages (a disconnect) pass through
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it grows past the cap (or the client left)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_problem(
            send,
            scope,
            413,
            title="Content Too Large",
            detail=f"the request body exceeds {self.max_bytes} bytes",
            type_=BODY_TOO_LARGE,
            headers={"Connection": "close"},
        )
