"""What bench/latency.py measures against: `make dev`'s own supervisor (the whole system on
its embedded defaults, SQLite) on free ports in a throwaway directory, or the same on a
PostgreSQL cluster of its own; its users' tokens; a Kafka observer of the event topics;
and a follower of one request's Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import TopicPartition
from elevate_core.events.envelope import decode
from elevate_core.events.topics import Topics
from elevate_local import runs
from elevate_local.kafka import KafkaBroker
from elevate_local.oidc import fetch_token, subject_of
from elevate_local.postgres import PostgresCluster

from bench.procstat import children_of, cpu_seconds, tree_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]


class DevStack:
    """`elevate-dev --free-ports`, exactly as `make dev` starts it (plus
    ELEVATE_DATABASE_URL when on PostgreSQL)."""

    def __init__(self, work: Path, *, postgres: bool) -> None:
        self.work = work
        self.postgres = postgres
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.cluster: PostgresCluster | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=200)

    def start(self, timeout: float = 300) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
        if self.postgres:
            self.cluster = PostgresCluster(self.work / "pg", ephemeral=True)
            self.cluster.start()
            env["ELEVATE_DATABASE_URL"] = self.cluster.url("elevate")
        argv = [sys.executable, "-m", "elevate_local.supervisor", "--free-ports"]
        self.proc = runs.spawn(
            [*argv, "--data-dir", str(self.work / "dev")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.ports:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the stack did not come up:\n" + "".join(list(self.tail)[-40:]))
            with contextlib.suppress(queue.Empty):
                line = self.lines.get(timeout=1)
                if "elevate-dev | ports " in line:
                    self.ports = json.loads(line.split("elevate-dev | ports ", 1)[1])

    def _pump(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with (self.work / "stack.log").open("w") as log:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                log.write(line)
                log.flush()
                self.tail.append(line)
                self.lines.put(line)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of every process of the stack, by component (the services by
        their module, Kafka, moto, the AWS proxy, PostgreSQL, …)."""
        assert self.proc is not None
        out: dict[str, float] = defaultdict(float)
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            todo += children_of(pid)
            out[_component(pid)] += cpu_seconds(pid)
        if self.cluster is not None and self.cluster.process is not None:
            out["postgres"] += tree_cpu_seconds(self.cluster.process.pid)
        return dict(out)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def broker(self) -> KafkaBroker:
        return KafkaBroker(self.work / "dev" / "kafka", port=self.ports["kafka"])

    def token(self, user: str) -> str:
        return fetch_token(self.url("oidc"), subject_of(user)).id_token

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.cluster is not None:
            self.cluster.stop()


_COMPONENTS = {
    "elevate_request_api": "request-api",
    "elevate_approval": "approval",
    "elevate_grant_worker": "grant-worker",
    "elevate_audit_ingest": "audit-ingest",
    "elevate_notifier": "notifier",
    "moto.server": "moto",
    "elevate_local.aws_proxy": "aws-proxy",
    "elevate_local.supervisor": "supervisor",
    "kafka": "kafka",
}


def _component(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return "gone"
    return next((name for key, name in _COMPONENTS.items() if key in argv), "other")


def request_id_of(data: dict[str, Any]) -> str | None:
    rid = data.get("request_id") or (data.get("snapshot") or {}).get("request_id")
    return str(rid) if rid else None


@dataclass
class Seen:
    """One event of a request: when its writer committed it (ce_time) and when the relay
    handed it to Kafka (the record's CreateTime), both epoch seconds."""

    committed: float
    produced: float


@dataclass
class Observer:
    """Reads the requests, decisions and grants topics from their ends, without a
    consumer group (nothing committed, nobody's offsets moved), as the broker's super user."""

    broker: KafkaBroker
    events: dict[str, dict[str, Seen]] = field(default_factory=lambda: defaultdict(dict))
    _task: asyncio.Task[None] | None = None
    _consumer: Any = None

    async def start(self) -> None:
        endpoint = self.broker.endpoint()
        admin = endpoint.admin()
        await admin.start()
        try:
            described = await admin.describe_topics(
                [str(t) for t in (Topics.REQUESTS, Topics.DECISIONS, Topics.GRANTS)]
            )
        finally:
            await admin.close()
        parts = [
            TopicPartition(t["topic"], int(p["partition"]))
            for t in described
            for p in t["partitions"]
        ]
        self._consumer = endpoint.consumer(enable_auto_commit=False)
        await self._consumer.start()
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            try:
                envelope = decode(record.value, record.headers)
            except Exception as exc:  # not ours to judge: the services dead-letter it
                print(f"observer: undecodable record on {record.topic}: {exc}", file=sys.stderr)
                continue
            rid = request_id_of(envelope.data)
            if rid is not None and envelope.type not in self.events[rid]:
                self.events[rid][envelope.type] = Seen(
                    envelope.time.timestamp(), record.timestamp / 1000
                )

    async def wait_for(self, rid: str, ce_type: str, timeout: float = 5) -> Seen | None:
        deadline = time.monotonic() + timeout
        while ce_type not in self.events.get(rid, {}):
            if self._task is not None and self._task.done():
                self._task.result()  # raises what stopped the observer
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.005)
        return self.events[rid][ce_type]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


class Follower:
    """One request's `GET /v1/requests/{id}/stream`: the epoch time each status was first
    seen by a client."""

    def __init__(self, client: httpx.AsyncClient, request_id: str) -> None:
        self.client = client
        self.request_id = request_id
        self.seen: dict[str, float] = {}
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        event = ""
        async with self.client.stream("GET", f"/v1/requests/{self.request_id}/stream") as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "status":
                    status = json.loads(line[6:])["status"]
                    self.seen.setdefault(status, time.time())
                    self._changed.set()

    async def reached(self, status: str, timeout: float = 20) -> float:
        deadline = time.monotonic() + timeout
        while status not in self.seen:
            if self.task.done():
                self.task.result()  # raises what ended the stream
                raise RuntimeError(f"stream ended before {status}; saw {self.seen}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.request_id} never {status}; saw {self.seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.seen[status]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await self.task
