"""Replay gates: how far a consumer of ours has read a topic, against its end offsets.

- *Stops*: stops are read by one consumer (requests topic), approvals by another (decisions
  topic), and Kafka orders nothing across topics. So an approval records the requests
  topic's end offsets at that moment (`gate`), and the worker serves its grant only once
  the stops consumer has committed at least that far on every partition: any cancel or
  revoke published before the approval has then been recorded, and wins before any create —
  also when both topics are replayed from the earliest offset into an empty database.
- *History*: before a pair's standing baseline is taken from AWS, grant-worker's own past
  on the grants topic (what it activated, what it recorded as standing) must have been read
  back, so a replay never mistakes its own assignments for somebody else's baseline.

In steady state both consumers are caught up and the gates are already open. A consumer in
the same process reports each offset commit it made (`observed`): a lower bound known
without asking the broker, which is asked only when that bound does not pass a gate
(partitions another replica reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from elevate_core.errors import TransientError
from elevate_core.kafka.security import KafkaEndpoint


class TopicProgress:
    def __init__(
        self, *, kafka: KafkaEndpoint, topic: str, group: str, max_age: float = 0.05
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.group = group
        self.max_age = max_age
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._committed: tuple[float, dict[str, int]] | None = None
        self._local: dict[str, int] = {}  # next offsets this process committed itself
        self._lock = asyncio.Lock()
        self._stopped = asyncio.Event()

    async def _start(self) -> None:
        if self._admin is not None and self._consumer is not None and self._partitions:
            return  # (a topic seen empty of partitions is described again next time)
        await self.close()
        admin = self.kafka.admin(client_id="elevate-progress")
        consumer = self.kafka.consumer(enable_auto_commit=False, client_id="elevate-progress")
        try:
            await admin.start()
            await consumer.start()
            [described] = await admin.describe_topics([self.topic])
            partitions = [int(p["partition"]) for p in described.get("partitions", [])]
        except BaseException:
            with contextlib.suppress(Exception):
                await admin.close()
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        # No such topic (yet): nothing was ever published there, nothing to wait for.
        self._admin, self._consumer = admin, consumer
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]

    async def end_offsets(self) -> dict[str, int]:
        """The topic's end offset per partition, now (a gate to wait for)."""
        async with self._lock:
            try:
                await self._start()
                assert self._consumer is not None
                if not self._partitions:
                    return {}
                ends = await self._consumer.end_offsets(self._partitions)
            except TransientError:
                raise
            except Exception as exc:
                await self.close()
                raise TransientError(f"end offsets of {self.topic}: {exc!r}") from exc
        return {str(tp.partition): int(offset) for tp, offset in ends.items() if offset}

    def observed(self, tp: TopicPartition, next_offset: int) -> None:
        """A commit of the group's consumer in this process succeeded: everything before
        `next_offset` was handled (the consumer commits after its transaction)."""
        key = str(tp.partition)
        if tp.topic == self.topic and next_offset > self._local.get(key, 0):
            self._local[key] = next_offset

    async def progress_for(self, gates: Iterable[Mapping[str, int]]) -> dict[str, int]:
        """At least how far the consumer has committed: this process's own commits when
        they pass every gate, else the broker's answer merged with them."""
        local = dict(self._local)
        if all(all(local.get(p, 0) >= o for p, o in gate.items()) for gate in gates):
            return local
        return await self.committed()

    async def committed(self, *, fresh: bool = False) -> dict[str, int]:
        """How far the consumer has committed, per partition (the broker's answer cached
        `max_age`, merged with this process's own commits)."""
        cached = self._committed
        if not fresh and cached is not None and time.monotonic() - cached[0] < self.max_age:
            return self._merged(cached[1])
        async with self._lock:
            try:
                await self._start()
                assert self._admin is not None
                offsets = await self._admin.list_consumer_group_offsets(self.group)
            except TransientError:
                raise
            except Exception as exc:
                await self.close()
                raise TransientError(f"committed offsets of {self.group}: {exc!r}") from exc
        progress = {
            str(tp.partition): int(meta.offset)
            for tp, meta in offsets.items()
            if tp.topic == self.topic and meta.offset >= 0
        }
        self._committed = (time.monotonic(), progress)
        return self._merged(progress)

    def _merged(self, broker: dict[str, int]) -> dict[str, int]:
        merged = dict(broker)
        for p, offset in self._local.items():
            merged[p] = max(offset, merged.get(p, 0))
        return merged

    async def caught_up(self) -> bool:
        """Whether the consumer has committed everything published until now."""
        ends = await self.end_offsets()
        done = await self.committed(fresh=True)
        return all(done.get(p, 0) >= offset for p, offset in ends.items())

    async def run(self) -> None:
        """As a service worker: nothing to do until `stop` closes the clients."""
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        await self.close()

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin, self._consumer, self._partitions = None, None, []
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()


class CaughtUpGate:
    """`passed(key)`: has the consumer committed at least the end offsets the topic had
    when `key` first asked? Anything published before that moment has then been handled.
    The first snapshot is kept per key (in memory: after a restart a later, still
    sufficient, snapshot is taken), so steady traffic cannot hold a gate shut."""

    def __init__(self, progress: TopicProgress) -> None:
        self.progress = progress
        self._gates: dict[str, dict[str, int]] = {}

    async def passed(self, key: str) -> bool:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = await self.progress.end_offsets()
        done = await self.progress.committed(fresh=True)
        if all(done.get(p, 0) >= offset for p, offset in gate.items()):
            del self._gates[key]
            return True
        return False
