"""Small helpers shared by the contract and integration tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from elevate_core.kafka.admin import ensure_topics


async def create_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    await ensure_topics(bootstrap, names=list(names), partitions=partitions)


async def read_all(bootstrap: str, topic: str, *, expect: int, timeout: float = 60.0) -> list[Any]:
    """Read `topic` from the beginning until `expect` records arrived (or time out)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                records.extend(msgs)
    finally:
        await consumer.stop()
    return records


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


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def data_of(record: Any) -> Any:
    return json.loads(record.value)


async def read_to_end(bootstrap: str, topic: str) -> list[Any]:
    """Every record on `topic` up to its current end offsets (for "exactly one" checks)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        from aiokafka import TopicPartition

        partitions = [
            TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())
        ]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, msgs in batch.items():
                records.extend(msgs)
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records
