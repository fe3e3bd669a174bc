"""A fault-injecting HTTP proxy in front of moto, so boto3 speaks real HTTP to a
misbehaving "AWS".

moto's Identity Center completes every assignment write at once and never throttles or
conflicts. Real Identity Center does all of that, so grant-worker is tested through this
proxy, which by rule and rate (with a seeded random generator):

- answers `ThrottlingException`, `ConflictException` or HTTP 500 instead of forwarding
  (so an injected error never has a side effect),
- adds latency before forwarding,
- reports `IN_PROGRESS` for the first k status polls of each assignment request,
- reports `FAILED` for a status poll and undoes the write in moto (a failed write has no
  effect in AWS either).

It records every call (operation, parameters, outcome, arrival and answer times), the peak
number of assignment writes in flight (accepted by "AWS" and not yet reported finished by a
status poll) and the peak number of calls in any sliding one-second window. The operation
is read from the JSON protocol's `X-Amz-Target` header
(`SWBExternalService.CreateAccountAssignment`).

It also emulates what moto lacks and the reconciler needs (FIELD-NOTES):
Identity Store `ExternalIds` (`external_ids`, `elevate_local.identity_emulation`);
`ListAccountsForProvisionedPermissionSet` answers the accounts a permission set has (ever)
been assigned in — from the writes it forwarded, `note_provisioned()`, and once per
permission set a scan of moto's assignments — and `ListAccountAssignments` is paginated
(`MaxResults`, default 20; `NextToken`), as AWS does.

Tests interleave deterministically by *holding* a call open: `hold("CreateAccountAssignment")`
parks the next such call (before it reaches moto, or after, with `after=True`) until the
test releases it — so "a revoke arrives while the create is in flight" is a fact, not a
hope.

    proxy = AwsFaultProxy("http://127.0.0.1:5000", seed=7)
    proxy.add_rule(FaultRule(fault="throttle", rate=0.3))
    proxy.start(); ...; proxy.stats()
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from elevate_local.aws_emulation import PAGING as _PAGING
from elevate_local.aws_emulation import MotoGaps, page
from elevate_local.aws_faults import (
    _ERRORS,
    _STATUS_REQUEST_ID,
    STATUS,
    WRITES,
    Call,
    Fault,
    FaultRule,
    Hold,
)
from elevate_local.identity_emulation import NOT_FOUND, ExternalIds
from elevate_local.ports import free_port

__all__ = ["AwsFaultProxy", "Call", "Fault", "FaultRule", "Hold"]
_POLICY_CHANGES = frozenset(
    {"PutInlinePolicyToPermissionSet", "DeleteInlinePolicyFromPermissionSet"}
)


# Every (X-Amz-Target prefix, operation) a proxy of this process was asked for: the test
# suite checks them against deploy/aws/iam/ when it ends (tests/conftest.py).
SEEN: set[tuple[str, str]] = set()


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    peak_in_flight: int = 0
    polls: dict[tuple[str, str], int] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    failed: set[tuple[str, str]] = field(default_factory=set)


class AwsFaultProxy:
    def __init__(
        self,
        target: str,
        *,
        seed: int = 0,
        rules: Iterable[FaultRule] = (),
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.host = host
        self.port = port or free_port()
        self.rules: list[FaultRule] = list(rules)
        self.holds: list[Hold] = []
        self.moto_gaps = MotoGaps(self.target_host, self.target_port)
        self.external_ids = ExternalIds()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control ----

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def hold(
        self, operation: str, *, after: bool = False, match: dict[str, Any] | None = None
    ) -> Hold:
        """Park the next `operation` call (whose JSON parameters include `match`)."""
        held = Hold(operation, after=after, match=match)
        with self._lock:
            self.holds.append(held)
        return held

    def note_provisioned(self, account_id: str, permission_set_arn: str) -> None:
        """An assignment made straight in moto: its permission set is provisioned there."""
        self.moto_gaps.provisioned(account_id, permission_set_arn)

    def release_all(self) -> None:
        with self._lock:
            holds = list(self.holds)
        for held in holds:
            held.release()

    def calls_of(self, operation: str | None = None) -> list[Call]:
        return [c for c in self.calls if operation is None or c.operation == operation]

    def reset_stats(self) -> None:
        with self._lock:
            self._state = _State()

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are written separately: without this, Nagle's algorithm and
            # the client's delayed ACK add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                proxy._handle(self)

            def do_GET(self) -> None:
                proxy._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- figures ----

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._state.calls)

    @property
    def peak_in_flight(self) -> int:
        with self._lock:
            return self._state.peak_in_flight

    @property
    def peak_calls_per_second(self) -> int:
        """Most calls that arrived within any one second (sliding window)."""
        times = sorted(c.at for c in self.calls)
        peak, first = 0, 0
        for last, at in enumerate(times):
            while times[first] <= at - 1.0:
                first += 1
            peak = max(peak, last - first + 1)
        return peak

    def count(self, operation: str | None = None, outcome: str | None = None) -> int:
        return sum(
            1
            for c in self.calls
            if (operation is None or c.operation == operation)
            and (outcome is None or c.outcome == outcome)
        )

    def stats(self) -> dict[str, Any]:
        by: dict[str, int] = {}
        for c in self.calls:
            by[f"{c.operation}:{c.outcome}"] = by.get(f"{c.operation}:{c.outcome}", 0) + 1
        return {
            "calls": len(self.calls),
            "peak_in_flight": self.peak_in_flight,
            "peak_calls_per_second": self.peak_calls_per_second,
            "by_operation_outcome": dict(sorted(by.items())),
        }

    # ---- the proxy ----

    def _pick(self, operation: str, faults: tuple[Fault, ...]) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if (
                    rule.fault in faults
                    and rule.applies(operation)
                    and self._random.random() < rule.rate
                ):
                    rule.fired += 1
                    return rule
        return None

    def _record(self, operation: str, outcome: str, arrived: float, params: dict[str, Any]) -> None:
        with self._lock:
            self._state.calls.append(
                Call(operation, outcome, arrived, params, answered=time.monotonic())
            )

    def _take_hold(self, operation: str, params: dict[str, Any], *, after: bool) -> Hold | None:
        with self._lock:
            for held in self.holds:
                if held.after == after and held.takes(operation, params):
                    held.reached.set()  # claimed under the lock: one call per hold
                    return held
        return None

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()  # calls per second count arrivals
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        target = req.headers.get("X-Amz-Target", "")
        operation = target.rpartition(".")[2] if target else f"{req.command} {req.path}"
        SEEN.add((target.rpartition(".")[0], operation))
        params = _params(body)
        before = self._take_hold(operation, params, after=False)
        if before is not None:
            before.park(params)

        latency = self._pick(operation, ("latency",))
        if latency is not None:
            time.sleep(latency.seconds)
        local = self._answer_here(operation, params)
        if local is not None:
            outcome, status, payload, headers = local
            self._record(operation, outcome, arrived, params)
            self._reply(req, status, payload, headers)
            return
        if operation == "ListAccountAssignments":
            body = json.dumps({k: v for k, v in params.items() if k not in _PAGING}).encode()
        by_external_id, _ = self.external_ids.request(operation, params)

        status, headers, payload = self._forward(req, by_external_id or body)
        if status < 400:
            payload = self._emulated(operation, params, payload)
        outcome = "ok" if status < 400 else f"error:{_error_code(payload)}"
        if status < 400 and operation in WRITES:
            self._write_accepted(operation, body, payload)
        elif status < 400 and operation in STATUS:
            payload, outcome = self._status(operation, body, payload)
        after = self._take_hold(operation, params, after=True)
        if after is not None:
            after.park(params)
        self._record(operation, outcome, arrived, params)
        self._reply(req, status, payload, headers)

    def _answer_here(
        self, operation: str, params: dict[str, Any]
    ) -> tuple[str, int, bytes, dict[str, str]] | None:
        """(outcome, status, payload, headers) of a call answered without moto: an
        injected error, or what the proxy emulates entirely."""
        error = self._pick(operation, ("throttle", "conflict", "http500", "denied"))
        if error is not None:
            status, code, message = _ERRORS[error.fault]
            payload = json.dumps({"__type": code, "message": message}).encode()
            return error.fault, status, payload, {"x-amzn-ErrorType": code}
        json_type = {"Content-Type": "application/x-amz-json-1.1"}
        if operation == "ListAccountsForProvisionedPermissionSet":
            payload = self.moto_gaps.provisioned_accounts(params)
            return "ok", 200, payload, json_type
        if operation == "DescribePermissionSetProvisioningStatus":
            status, payload = self.moto_gaps.provisioning_status(params)
            if status >= 400:
                code = "ResourceNotFoundException"
                return f"error:{code}", status, payload, {"x-amzn-ErrorType": code}
            return "ok", 200, payload, json_type
        if self.external_ids.request(operation, params)[1]:
            code = "ResourceNotFoundException"
            return f"error:{code}", 400, NOT_FOUND, {"x-amzn-ErrorType": code}
        return None

    def _emulated(self, operation: str, params: dict[str, Any], payload: bytes) -> bytes:
        """moto's answer, amended where moto differs from AWS (FIELD-NOTES)."""
        if operation == "ListAccountAssignments":
            payload = page(payload, params, "AccountAssignments", self.moto_gaps.page_size)
        elif operation == "ProvisionPermissionSet":
            payload = self.moto_gaps.provision(params, payload)
        elif operation in _POLICY_CHANGES:
            self.moto_gaps.changed(str(params.get("PermissionSetArn")))
        return self.external_ids.response(operation, payload)

    def _forward(
        self, req: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            headers = {
                k: v
                for k, v in req.headers.items()
                if k.lower() not in ("connection", "content-length")
            }
            headers["Content-Length"] = str(len(body))  # the body may have been rewritten
            conn.request(req.command, req.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            keep = {
                k: v
                for k, v in resp.getheaders()
                if k.lower() not in {"content-length", "connection", "transfer-encoding"}
            }
            return resp.status, keep, payload
        finally:
            conn.close()

    def _moto(self, operation: str, params: dict[str, Any]) -> None:
        conn = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            conn.request(
                "POST",
                "/",
                body=json.dumps(params).encode(),
                headers={
                    "X-Amz-Target": f"SWBExternalService.{operation}",
                    "Content-Type": "application/x-amz-json-1.1",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/"
                    "sso/aws4_request, SignedHeaders=host, Signature=0",
                },
            )
            conn.getresponse().read()
        finally:
            conn.close()

    def _write_accepted(self, operation: str, body: bytes, payload: bytes) -> None:
        kind = WRITES[operation]
        status_key = (
            "AccountAssignmentCreationStatus"
            if kind == "create"
            else "AccountAssignmentDeletionStatus"
        )
        request_id = json.loads(payload).get(status_key, {}).get("RequestId", "")
        params = json.loads(body or b"{}")
        if kind == "create":  # provisioning stays after the assignment goes, as in AWS
            self.moto_gaps.provisioned(
                str(params.get("TargetId")), str(params.get("PermissionSetArn"))
            )
        with self._lock:
            state = self._state
            state.writes[(kind, request_id)] = params
            state.in_flight.add((kind, request_id))
            state.peak_in_flight = max(state.peak_in_flight, len(state.in_flight))

    def _status(self, operation: str, body: bytes, payload: bytes) -> tuple[bytes, str]:
        kind, key = STATUS[operation]
        request_id = str(json.loads(body or b"{}").get(_STATUS_REQUEST_ID[operation], ""))
        ident = (kind, request_id)
        data = json.loads(payload)
        status = data.get(key, {})
        with self._lock:
            self._state.polls[ident] = self._state.polls.get(ident, 0) + 1
            polls = self._state.polls[ident]
            already_failed = ident in self._state.failed
        if already_failed:
            status.update(Status="FAILED", FailureReason="Injected failure")
            return json.dumps(data).encode(), "failed"
        slow = next(
            (
                r
                for r in list(self.rules)
                if r.fault == "in_progress" and r.applies(operation) and polls <= r.polls
            ),
            None,
        )
        if slow is not None:
            status["Status"] = "IN_PROGRESS"
            return json.dumps(data).encode(), "in_progress"
        fail = self._pick(operation, ("failed",))
        if fail is not None:
            self._undo(ident)
            status.update(Status="FAILED", FailureReason=fail.reason)
            outcome = "failed"
        else:
            outcome = "ok"
        with self._lock:
            self._state.in_flight.discard(ident)
            if outcome == "failed":
                self._state.failed.add(ident)
        return json.dumps(data).encode(), outcome

    def _undo(self, ident: tuple[str, str]) -> None:
        """A FAILED write leaves AWS as it was: reverse what moto already did."""
        with self._lock:
            params = self._state.writes.get(ident)
        if not params:
            return
        inverse = "DeleteAccountAssignment" if ident[0] == "create" else "CreateAccountAssignment"
        self._moto(inverse, params)

    @staticmethod
    def _reply(
        req: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str]
    ) -> None:
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)


def _params(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("__type", "unknown")).rpartition("#")[2]
    except (ValueError, AttributeError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """`python -m elevate_local.aws_proxy --target URL --port N`: the proxy as a process
    (no faults; its emulation of what moto lacks), for `make dev` and the benches."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="elevate-aws-proxy", description=main.__doc__)
    parser.add_argument("--target", required=True, help="moto's URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="(docker-compose.yml: 0.0.0.0)")
    parser.add_argument(
        "--external-id-issuer",
        action="append",
        default=[],
        help="give the seeded users ExternalIds of this OIDC issuer (repeatable)",
    )
    args = parser.parse_args(argv)
    proxy = AwsFaultProxy(args.target, port=args.port, host=args.host)
    for issuer in args.external_id_issuer:
        proxy.external_ids.link_seeded(issuer)
    proxy.start()
    print(f"AWS (moto, through the emulating proxy) at {proxy.endpoint_url}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
