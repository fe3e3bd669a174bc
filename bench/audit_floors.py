"""What the audit pipeline cannot go below: the cost of the parts that are not Elevate's
code, measured in the same run as bench/audit.py, and where the service's CPU goes.

- consume only: the same records fetched with the service consumer's settings (TLS, SASL,
  read_committed, its fetch sizes), nothing decoded;
- produce only: the service's OCSF records produced again with its transactional producer
  (`TransactionalOutput`, batches of the size the pipeline commits), nothing computed;
- a py-spy profile of the service while it works, by the module of the running frame
  (`--profile`; C functions count for the Python frame that called them, e.g. orjson's
  time for `parse_json_object`).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.kafka.transactional import (
    FETCH_RECORDS,
    PARTITION_FETCH_BYTES,
    Output,
    TransactionalOutput,
)

SAMPLE = 50_000  # records the floors are measured over (the values are held in memory)
_FRAME = re.compile(r"\((?P<path>[^:()]+):\d+\)$")


def reader(kafka: KafkaEndpoint, topic: str) -> AIOKafkaConsumer:
    """`topic` from the start with the service's CloudTrail consumer settings."""
    return kafka.consumer(
        topic,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
    )


async def consume_only(kafka: KafkaEndpoint, topic: str, n: int) -> tuple[float, float]:
    """(records/s of wall time, CPU µs per record) to fetch n records, as the service does."""
    consumer = reader(kafka, topic)
    await consumer.start()
    seen, first, cpu = 0, 0.0, 0.0
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            if batch and seen == 0:
                first, cpu = time.perf_counter(), time.process_time()
            seen += sum(len(messages) for messages in batch.values())
    finally:
        elapsed, used = time.perf_counter() - first, time.process_time() - cpu
        await consumer.stop()
    return seen / elapsed, used / seen * 1e6


async def sample_outputs(kafka: KafkaEndpoint, topic: str, n: int) -> list[Output]:
    """Up to n of the OCSF records the service produced (key, value and headers)."""
    consumer = kafka.consumer(
        topic, auto_offset_reset="earliest", group_id=None, isolation_level="read_committed"
    )
    await consumer.start()
    out: list[Output] = []
    try:
        while len(out) < n:
            batch = await consumer.getmany(timeout_ms=2000, max_records=FETCH_RECORDS)
            if not batch:
                break
            for messages in batch.values():
                out += [
                    Output(topic, m.key, m.value, tuple(m.headers))
                    for m in messages
                    if dict(m.headers).get("ocsf_class_uid") == b"6003"
                ]
    finally:
        await consumer.stop()
    return out[:n]


async def produce_only(
    kafka: KafkaEndpoint, prefix: str, outputs: list[Output], *, per_transaction: int
) -> tuple[float, float]:
    """(records/s, CPU µs per record) to produce `outputs` in Kafka transactions with
    offsets, as the CloudTrail consumer commits them (on a floor-only transactional id)."""
    name = f"{prefix}audit-ingest.floor"
    output = TransactionalOutput(kafka, transactional_prefix=name, group_id=name)
    tp = TopicPartition(f"{prefix}elevate.cloudtrail.v1", 0)
    try:
        await output.commit(tp, 0, outputs[:1])  # producer started, metadata known
        began, cpu = time.perf_counter(), time.process_time()
        for offset in range(0, len(outputs), per_transaction):
            await output.commit(tp, offset, outputs[offset : offset + per_transaction])
        elapsed, used = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await output.close()
    return len(outputs) / elapsed, used / len(outputs) * 1e6


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the service's Python stacks (without pausing it) for `seconds`."""
    spy = Path(sys.executable).parent / "py-spy"  # the workspace's pinned one (dev group)
    argv = [str(spy), "record", "--pid", str(pid), "--nonblocking", "--rate", "200"]
    argv += ["--duration", str(max(1, int(seconds))), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _category(path: str) -> str:
    if "elevate_" in path:
        return "Elevate's code (with the C calls it makes: orjson, hashlib)"
    for needle, name in (
        ("aiokafka", "Kafka client (aiokafka)"),
        ("sqlalchemy", "database client (SQLAlchemy, asyncpg)"),
        ("asyncpg", "database client (SQLAlchemy, asyncpg)"),
        ("ssl", "TLS, sockets, event loop"),
        ("asyncio", "TLS, sockets, event loop"),
        ("selectors", "TLS, sockets, event loop"),
        ("socket", "TLS, sockets, event loop"),
    ):
        if needle in path:
            return name
    return "other (Python runtime, prometheus_client, …)"


def summarise(raw: Path, top: int = 12) -> str:
    """Busy samples of the main thread by category of the running frame, and the
    project's own frames that cost most."""
    categories: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "Thread._bootstrap" in stack:
            continue  # idle worker threads
        leaf = stack.rsplit(";", 1)[-1]
        if "select (selectors" in leaf:
            continue  # waiting for the network: not CPU
        match = _FRAME.search(leaf)
        path = match.group("path") if match else leaf
        categories[_category(path)] += int(count)
        if "elevate_" in path:
            frames[leaf.split(" (")[0] + " " + path.rsplit("/", 1)[-1]] += int(count)
    total = sum(categories.values()) or 1
    lines = [f"  {n / total:6.1%}  {name}" for name, n in categories.most_common()]
    lines.append("  Elevate's own frames (self time):")
    lines += [f"    {n / total:6.1%}  {name}" for name, n in frames.most_common(top)]
    return "\n".join(lines)


async def wait_profile(proc: subprocess.Popen[bytes]) -> None:
    await asyncio.to_thread(proc.wait, 120)
