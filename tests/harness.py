"""The one test harness of every service's tests and the runtime contract suite: migrated
databases, publishing as the services do, workers run in this process (or a service as a
process), a service's outbox and topics read back, and waiting — for an outcome
(`eventually`), or for a positive signal that processing has passed a point (a consumer
group committed past offsets, the relay past every row so far, a counter reached). A test
asserting that something did *not* happen waits for such a signal first, never a while."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from aiokafka import TopicPartition
from elevate_core.app import ServiceContext, Worker
from elevate_core.db import Database
from elevate_core.events.base import Event
from elevate_core.events.envelope import Envelope, encode, new_envelope
from elevate_core.events.signing import SIGNED_TOPICS, Signer, writer_of
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_core.kafka.producer import idempotent_producer
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.migrate import upgrade
from elevate_core.outbox import OutboxMessage
from elevate_local import runs
from elevate_local.event_keys import LocalEventKeys
from prometheus_client import REGISTRY
from sqlalchemy import MetaData, func, select

ROOT = Path(__file__).resolve().parents[1]
Stragglers = Literal["fail", "cancel"]

# ---- waiting ----


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 60.0,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Wait for an outcome (not a speed): the timeout only bounds a broken run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


# ---- databases ----


async def migrated(
    url: str, versions: Path | None = None, *, extra: Iterable[MetaData] = ()
) -> Database:
    """A database at the head of the runtime's chain (plus a service's `versions`), with
    `extra` test-only tables created beside it."""
    db = Database(url)
    await upgrade(db, versions)
    async with db.engine.begin() as conn:
        for metadata in extra:
            await conn.run_sync(metadata.create_all)
    return db


@asynccontextmanager
async def database(
    url: str, versions: Path | None = None, *, extra: Iterable[MetaData] = ()
) -> AsyncIterator[Database]:
    db = await migrated(url, versions, extra=extra)
    try:
        yield db
    finally:
        await db.dispose()


# ---- publishing ----


def envelope(
    event: Event, *, source: str, subject: str | None = None, at: datetime | None = None
) -> Envelope:
    """`event` about its request (by default): the key on every Elevate topic."""
    if subject is None:
        rid = getattr(event, "request_id", None) or event.snapshot.request_id  # type: ignore[attr-defined]
        subject = str(rid)
    return new_envelope(event, source=source, subject=subject, time=at)


async def publish(
    kafka: KafkaEndpoint, topic: str, *envelopes: Envelope, sign: bool = True
) -> None:
    """Publish as the relay does: CloudEvents binary mode, key = subject, in order — and,
    on a signed topic, signed with its writer's key (`sign=False`: a forgery)."""
    await produce(kafka, [(topic, *encode(e), _key(e)) for e in envelopes], sign=sign)


async def publish_events(
    kafka: KafkaEndpoint,
    *events: Event,
    prefix: str = "",
    source: str = "elevate/test",
    sign: bool = True,
) -> None:
    """Events as their writer publishes them, each to its topic (`prefix` + catalog name)."""
    pairs = [(f"{prefix}{e.topic}", envelope(e, source=source)) for e in events]
    records = [(topic, *encode(env), _key(env)) for topic, env in pairs]
    await produce(kafka, records, sign=sign)


async def publish_raw(kafka: KafkaEndpoint, topic: str, *values: bytes, key: bytes | None) -> None:
    """Records that are not CloudEvents (raw CloudTrail, garbage)."""
    await produce(kafka, [(topic, v, [], key) for v in values])


def _key(env: Envelope) -> bytes | None:
    return env.subject.encode() if env.subject else None


Record = tuple[str, bytes, list[tuple[str, bytes]], bytes | None]
_event_keys: list[LocalEventKeys] = []


def use_event_keys(keys: LocalEventKeys) -> None:
    """The session's signing keys (tests/conftest.py): what the harness signs with."""
    _event_keys[:] = [keys]


def event_settings(principal: Principal) -> dict[str, Any]:
    """`Settings(**…)` keyword arguments for `principal`'s signing and verifying keys."""
    [keys] = _event_keys
    return keys.settings(principal)


def signer_of(principal: Principal) -> Signer:
    """`principal`'s event-signing key (only the writers of signed topics have one)."""
    [keys] = _event_keys
    return Signer.from_file(keys.private_key(principal))


def event_environment(principal: Principal) -> dict[str, str]:
    [keys] = _event_keys
    return keys.environment(principal)


def signed(topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` plus the signature of `topic`'s writer, if `topic` (any prefix) is signed."""
    catalog = next((t for t in SIGNED_TOPICS if topic.endswith(str(t))), None)
    if catalog is None or not any(k == "ce_id" for k, _ in headers):
        return headers
    signer = signer_of(writer_of(catalog))
    covered = {k: v.decode() for k, v in headers}
    return headers + [(k, v.encode()) for k, v in signer.sign(value, covered)]


async def produce(kafka: KafkaEndpoint, records: list[Record], *, sign: bool = True) -> None:
    """(topic, value, headers, key) records, in order, each acknowledged."""
    if sign:
        records = [(t, v, signed(t, v, h), k) for t, v, h, k in records]
    producer = idempotent_producer(kafka, client_id="test-publisher")
    await producer.start()
    try:
        sent = [await producer.send(t, v, key=k, headers=h) for t, v, h, k in records]
        await producer.flush()
        for future in sent:
            await future
    finally:
        await producer.stop()


async def create_topics(kafka: KafkaEndpoint, *names: str, partitions: int = 3) -> None:
    await ensure_topics(kafka, names=list(names), partitions=partitions)


def kafka_from_env() -> KafkaEndpoint:
    """In a worker process: the endpoint its parent passed as `ELEVATE_KAFKA_*`."""
    from elevate_core.settings import Settings, load_settings

    return load_settings(Settings, mode="test").kafka


# ---- running workers in this process ----


@dataclass
class Workers:
    """Workers running as tasks; `held` ones are not started until `start_held()`."""

    workers: list[Worker] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    held: list[Worker] = field(default_factory=list)

    def start(self, *workers: Worker) -> None:
        self.workers += workers
        self.tasks += [asyncio.create_task(w.run(), name=type(w).__name__) for w in workers]

    def start_held(self) -> None:
        held, self.held = self.held, []
        self.start(*held)

    async def stop(self, *, timeout: float = 30.0, stragglers: Stragglers = "fail") -> None:
        """Stop all; a task still running after `timeout` is cancelled and, unless
        `stragglers="cancel"` (a worker the test cut off), an error: shutdown is prompt."""
        for w in [*self.workers, *self.held]:
            await w.stop()
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending and stragglers == "fail":
            names = sorted(t.get_name() for t in pending)
            raise AssertionError(f"workers did not stop within {timeout:.0f}s: {names}")


@asynccontextmanager
async def running(
    *workers: Worker,
    hold_back: Callable[[Worker], bool] = lambda _w: False,
    timeout: float = 30.0,
    stragglers: Stragglers = "fail",
) -> AsyncIterator[Workers]:
    """`workers` as tasks for the block's duration, stopped at its end; those `hold_back`
    names wait for `Workers.start_held`, so a test can order them."""
    group = Workers(held=[w for w in workers if hold_back(w)])
    group.start(*(w for w in workers if w not in group.held))
    try:
        yield group
    finally:
        await group.stop(timeout=timeout, stragglers=stragglers)


@asynccontextmanager
async def running_service(ctx: ServiceContext, **options: Any) -> AsyncIterator[Workers]:
    """A wired service context as its process runs it: startup hooks, then its workers
    (`options` as for `running`)."""
    for hook in ctx.startup:
        await hook()
    async with running(*ctx.workers, **options) as group:
        yield group


# ---- a service as a process ----


def spawn_service(
    module: str,
    settings: Mapping[str, Any],
    *,
    args: Iterable[str] = (),
    stderr: int = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """`python -m module` in test mode, a recorded child of this run (gone with it), with
    `settings` as ELEVATE_<NAME> (durations ISO 8601) and none of the developer's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    env["ELEVATE_MODE"] = "test"
    for name, value in settings.items():
        if isinstance(value, timedelta):
            value = f"PT{int(value.total_seconds())}S"
        env[f"ELEVATE_{name.upper()}"] = str(value)
    argv = [sys.executable, "-m", module, *args]
    return runs.spawn(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


# ---- what a service wrote to its outbox ----


def event_name(ce_type: str) -> str:
    """The event's class name: io.elevate.request.expired.v1 → RequestExpired."""
    return "".join(w.capitalize() for w in ce_type.split(".")[2:-1])


@dataclass(frozen=True)
class Emitted:
    """One outbox row, decoded."""

    topic: str
    key: str | None
    ce_type: str
    data: Any
    sent: bool

    @property
    def name(self) -> str:
        return event_name(self.ce_type)

    @property
    def verb(self) -> str:
        """The last word of its type: io.elevate.grant.activated.v1 → activated."""
        return self.ce_type.split(".")[-2]


async def outbox(db: Database, *, key: object | None = None) -> list[Emitted]:
    """Every row of the service's outbox (about `key` when given), in the order written."""
    stmt = select(OutboxMessage).order_by(OutboxMessage.id)
    if key is not None:
        stmt = stmt.where(OutboxMessage.key == str(key))
    async with db.sessions() as session:
        rows = (await session.execute(stmt)).scalars().all()
    return [  # (raw rows, e.g. CloudTrail records, have no ce_type)
        Emitted(
            r.topic, r.key, dict(r.headers).get("ce_type", ""), json.loads(r.value), bool(r.sent_at)
        )
        for r in rows
    ]


# ---- what reached a topic ----


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def data_of(record: Any) -> Any:
    return json.loads(record.value)


async def read_all(
    kafka: KafkaEndpoint, topic: str, *, expect: int, timeout: float = 60.0
) -> list[Any]:
    """Read `topic` from the beginning until `expect` records arrived (or time out)."""
    reader = TopicReader(kafka, topic)
    async with reader:
        deadline = time.monotonic() + timeout
        while len(reader.received) < expect and time.monotonic() < deadline:
            await reader.poll()
    return reader.received


async def read_to_end(kafka: KafkaEndpoint, topic: str) -> list[Any]:
    """Every record on `topic` up to its end offsets now (for "exactly one" checks)."""
    ends = await end_offsets(kafka, topic)
    remaining = {TopicPartition(topic, p): end for p, end in ends.items() if end > 0}
    if not remaining:
        return []
    consumer = kafka.consumer(
        auto_offset_reset="earliest", enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(list(remaining))
        await consumer.seek_to_beginning(*remaining)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, msgs in batch.items():
                records.extend(m for m in msgs if m.offset < remaining[tp])
            for tp, end in list(remaining.items()):
                if await consumer.position(tp) >= end:  # (past transaction markers too)
                    del remaining[tp]
    finally:
        await consumer.stop()
    return records


class TopicReader:
    """Reads a topic from the beginning, live, and keeps every record it saw."""

    def __init__(self, kafka: KafkaEndpoint, topic: str) -> None:
        self.received: list[Any] = []
        self._consumer = kafka.consumer(
            topic,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            # as a SIEM must: outputs of aborted Kafka transactions are not records
            isolation_level="read_committed",
        )

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[Any]:
        """The records that arrived since the last poll (waits up to 200 ms for some)."""
        batch = await self._consumer.getmany(timeout_ms=200)
        new = [record for messages in batch.values() for record in messages]
        self.received.extend(new)
        return new

    async def wait_for(self, check: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
        """Poll until `check()` holds (the timeout only bounds a broken run)."""

        async def seen() -> bool:
            return check() or (bool(await self.poll()) and check())

        await eventually(seen, timeout=timeout, interval=0, what=what)


# ---- positive signals: processing has passed a point ----


async def end_offsets(kafka: KafkaEndpoint, topic: str) -> dict[int, int]:
    """The end offset of each partition of `topic`, now (the topic must exist)."""
    admin = kafka.admin(client_id="test-offsets")
    # read_committed: the end is the last stable offset (open transactions not counted)
    consumer = kafka.consumer(enable_auto_commit=False, isolation_level="read_committed")
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        parts = [TopicPartition(topic, int(p["partition"])) for p in described["partitions"]]
        assert parts, f"no topic {topic}"  # else every wait on it would pass at once
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
        await admin.close()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def processed_past(
    kafka: KafkaEndpoint,
    group: str,
    topic: str,
    *,
    offsets: Mapping[int, int] | None = None,
    timeout: float = 60.0,
) -> dict[int, int]:
    """Wait until consumer group `group` has committed `offsets` on `topic` (by default
    its end offsets now: everything published there so far). Elevate's consumers commit
    only after the transaction that handled a record — dedupe row included — or after
    the DLQ holds it, so from then on whatever those records did, or did not do, is final.
    Returns the offsets waited for."""
    target = dict(offsets) if offsets is not None else await end_offsets(kafka, topic)
    admin = kafka.admin(client_id="test-progress")
    await admin.start()
    try:

        async def past() -> bool:
            committed = await admin.list_consumer_group_offsets(group)
            done = {tp.partition: m.offset for tp, m in committed.items() if tp.topic == topic}
            return all(done.get(p, -1) >= end for p, end in target.items() if end > 0)

        await eventually(past, timeout=timeout, what=f"{group} past {target} on {topic}")
    finally:
        await admin.close()
    return target


async def relayed(db: Database, *, timeout: float = 60.0) -> None:
    """Wait until the outbox relay has dealt with (sent, or moved aside) every row written
    to `db`'s outbox so far."""
    async with db.sessions() as session:
        last = (await session.execute(select(func.max(OutboxMessage.id)))).scalar_one() or 0
    waiting = select(func.count()).where(
        OutboxMessage.id <= last, OutboxMessage.sent_at.is_(None), OutboxMessage.dead_at.is_(None)
    )

    async def done() -> bool:
        async with db.sessions() as session:
            return (await session.execute(waiting)).scalar_one() == 0

    await eventually(done, timeout=timeout, what=f"the relay past outbox row {last}")


def metric(name: str, labels: Mapping[str, str] | None = None) -> float:
    """A sample of this process's Prometheus registry (0 when never recorded)."""
    return float(REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0)


async def counted(
    name: str, at_least: float, labels: Mapping[str, str] | None = None, *, timeout: float = 60.0
) -> None:
    """Wait until counter `name` (with `labels`) has reached `at_least`."""

    async def reached() -> bool:
        return metric(name, labels) >= at_least

    await eventually(reached, timeout=timeout, what=f"{name}{labels} reaching {at_least}")
