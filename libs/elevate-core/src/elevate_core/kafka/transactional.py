"""Consume-transform-produce in Kafka transactions: a batch's outputs and the offsets it
consumed commit together, or neither does (exactly once on Kafka, without an outbox row
per output).

What stays atomic, and with what:
- **Kafka**: the outputs of a partition's batch and its consumed offsets (one transaction
  per batch, on a transactional id of that input partition — a zombie still holding the
  partition after a rebalance is fenced when the new owner's producer starts).
- **Database**: the handler's state changes (one database transaction per batch),
  committed *before* the Kafka transaction. A crash between the two leaves the database
  ahead of Kafka: the batch is read again from the committed offset and the handler must
  then produce the same outputs again. Handlers make that so by recording *where* they
  first saw each input (`Delivery.position`): an input seen again at the same position is
  the same delivery being retried, not a duplicate (audit-ingest's digest claims).

Readers of the output topics must read with `isolation.level=read_committed`; otherwise
they also see the outputs of aborted transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, cast

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_core.db import Database
from elevate_core.errors import ElevateError
from elevate_core.events.envelope import Envelope
from elevate_core.failpoints import failpoint
from elevate_core.health import health
from elevate_core.kafka.consumer import HANDLED, Consumer, ConsumerConfig
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.retry import DEFAULT_POLICY, RetryPolicy

log = logging.getLogger(__name__)
# Per fetch, over all partitions, and per partition: a transaction costs a few round trips
# whatever its size, so few large ones; beyond these, memory grew faster than throughput
# (bench/audit.py, which reads with the same settings: 6,000 and 8 MiB cost 50 % more
# memory for no gain, 2,000 and 1 MiB a fifth of the rate).
FETCH_RECORDS = 3000
PARTITION_FETCH_BYTES = 2 << 20


class Delivery(NamedTuple):  # tuples: built for every record, at a fraction of the cost
    """One consumed record and where it was read."""

    topic: str
    partition: int
    offset: int
    envelope: Envelope

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


class Output(NamedTuple):
    """One record to produce in the batch's transaction."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


BatchHandler = Callable[[AsyncSession, Sequence[Delivery]], Awaitable[Sequence[Output]]]


class FencedError(ElevateError):
    """Another producer took this partition's transactional id (the partition moved to
    another replica): retrying re-reads from the committed offset once it is ours again."""

    retryable = True


class TransactionalOutput:
    """One transactional producer per input partition, started on first use."""

    def __init__(
        self,
        kafka: KafkaEndpoint,
        *,
        transactional_prefix: str,
        group_id: str,
        max_batch_bytes: int = 1 << 20,
    ) -> None:
        self.kafka = kafka
        self.prefix = transactional_prefix
        self.group_id = group_id
        self.max_batch_bytes = max_batch_bytes
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._partitioner = DefaultPartitioner()

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self.prefix}.{tp.topic}.{tp.partition}"

    async def _producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self._producers.get(tp)
        if producer is None:
            producer = self.kafka.producer(
                client_id=self.transactional_id(tp),
                transactional_id=self.transactional_id(tp),
                enable_idempotence=True,
                acks="all",
                linger_ms=0,
                max_batch_size=self.max_batch_bytes,
                retry_backoff_ms=20,
                request_timeout_ms=15000,
            )
            try:
                await producer.start()  # fences any earlier producer of this id
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producers[tp] = producer
        return producer

    async def commit(self, tp: TopicPartition, next_offset: int, outputs: Sequence[Output]) -> None:
        """Produce `outputs` and commit `next_offset` for `tp` in one transaction."""
        producer = await self._producer(tp)
        try:
            await producer.begin_transaction()
            acks = await self._send(producer, outputs)
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group_id)
            for ack in acks:
                await ack
            await producer.commit_transaction()
        except BaseException as exc:
            # Nothing of it becomes visible: the next producer of this transactional id aborts
            # what this one left open (and the broker does at the transaction timeout).
            await self._drop(tp)
            if isinstance(exc, ProducerFenced):
                raise FencedError(f"transactional id {self.transactional_id(tp)} fenced") from exc
            raise

    async def _send(self, producer: AIOKafkaProducer, outputs: Sequence[Output]) -> list[Any]:
        """The outputs as one record batch per (topic, partition): far cheaper per record
        than a send() each."""
        acks: list[Any] = []
        builders: dict[tuple[str, int], Any] = {}
        partitions_of: dict[str, list[int]] = {}
        partition_of: dict[tuple[str, bytes | None], int] = {}  # outputs share few keys
        for output in outputs:
            partitions = partitions_of.get(output.topic)
            if partitions is None:
                partitions = sorted(await producer.partitions_for(output.topic))
                partitions_of[output.topic] = partitions
            partition = partition_of.get((output.topic, output.key), -1)
            if partition < 0 or output.key is None:
                # the same murmur2 partitioner as send() and the Java client: keys stay put
                partition = self._partitioner(output.key, partitions, partitions)
                partition_of[(output.topic, output.key)] = partition
            where = (output.topic, partition)
            builder = builders.get(where) or producer.create_batch()
            headers = list(output.headers)
            if builder.append(key=output.key, value=output.value, timestamp=None, headers=headers):
                builders[where] = builder
                continue
            acks.append(await producer.send_batch(builder, output.topic, partition=partition))
            builder = producer.create_batch()
            # an empty batch takes any first record (aiokafka): never dropped here
            if builder.append(key=output.key, value=output.value, timestamp=None, headers=headers):
                builders[where] = builder
            else:  # pragma: no cover - aiokafka's contract
                raise RuntimeError("an empty record batch refused a record")
        for (topic, partition), builder in builders.items():
            acks.append(await producer.send_batch(builder, topic, partition=partition))
        return acks

    async def _drop(self, tp: TopicPartition) -> None:
        producer = self._producers.pop(tp, None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def close(self) -> None:
        for tp in list(self._producers):
            await self._drop(tp)


class TransactionalConsumer(Consumer):
    """The idempotent consumer (`Consumer`: decoding, DLQ, the one retry policy, one by one
    after a failed batch) with a batch handler whose outputs and offsets commit in one Kafka
    transaction. The handler owns deduplication (it sees each delivery's position)."""

    def __init__(
        self,
        db: Database,
        config: ConsumerConfig,
        handler: BatchHandler,
        *,
        output: TransactionalOutput,
        retry: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        super().__init__(db, config, _no_handler, retry=retry)
        self.batch_handler = handler
        self.output = output
        # Per partition, the last of its queued Kafka steps (commits run in order, behind),
        # and the offset its last queued transaction commits.
        self._pending: dict[TopicPartition, asyncio.Task[None]] = {}
        self._in_transaction: dict[TopicPartition, int] = {}

    async def _loop(self) -> None:
        """The partitions of a fetch concurrently: each has its own database session and
        transactional producer, so one's round trips (the database's, the transaction's
        commit) overlap the others' work instead of adding up."""
        assert self._consumer is not None
        while not self._stopping.is_set():
            self._raise_failed()
            batches = await self._consumer.getmany(
                timeout_ms=500, max_records=self.config.max_records
            )
            results = await asyncio.gather(
                *(self._partition_batch(tp, messages) for tp, messages in batches.items()),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:  # after every partition finished what it could
                raise failures[0]

    async def _try_together(
        self, run: list[tuple[Any, Envelope]]
    ) -> tuple[int | None, BaseException | None]:
        try:
            outcome = await self._transact(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return None, exc  # not one message's fault that we could tell: one by one
        HANDLED.labels(self.config.name, outcome).inc(len(run))
        health.ok(self._component, "consuming")
        return None, None

    async def _handle(self, message: Any, envelope: Envelope) -> str:
        outcome = await self._transact([(message, envelope)])
        health.ok(self._component, "consuming")
        return outcome

    async def _transact(self, run: list[tuple[Any, Envelope]]) -> str:
        first = run[0][0]
        tp = TopicPartition(first.topic, first.partition)
        if self._consumer is not None and tp not in self._consumer.assignment():
            return "revoked"  # rebalanced away meanwhile: its new owner handles it
        deliveries = [Delivery(m.topic, m.partition, m.offset, e) for m, e in run]
        async with self.db.transaction() as session:
            outputs = await self.batch_handler(session, deliveries)
        failpoint("consumer.between_commits")  # crash test: database ahead of Kafka
        next_offset = run[-1][0].offset + 1
        self._queue(tp, lambda: self.output.commit(tp, next_offset, outputs))
        self._in_transaction[tp] = next_offset
        return "handled"

    async def _commit(self, tp: TopicPartition, next_offset: int) -> None:
        if self._in_transaction.get(tp) == next_offset:
            return  # the batch's transaction commits this offset itself
        # Behind the partition's transactions, never before them: an offset committed
        # ahead of its batch's transaction would skip the batch if that transaction failed
        # (this one follows messages that were dead-lettered, outside any transaction).
        self._queue(tp, lambda: Consumer._commit(self, tp, next_offset))

    def _queue(self, tp: TopicPartition, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` after the partition's earlier steps, in the background: the next batch
        is read and worked on while this one's transaction commits. A step whose earlier
        one failed does not run; the loop raises that failure (`_raise_failed`) and the
        consumer restarts from the last committed offset: the claims make re-reading it
        emit the same records again, once."""
        previous = self._pending.get(tp)

        async def chained() -> None:
            if previous is not None:
                await previous
            await step()

        self._pending[tp] = asyncio.create_task(chained(), name=f"kafka-commit:{tp}")

    def _raise_failed(self) -> None:
        for tp, task in list(self._pending.items()):
            if task.done():
                del self._pending[tp]
                if not task.cancelled() and task.exception() is not None:
                    raise cast(BaseException, task.exception())

    async def _close(self) -> None:
        pending, self._pending = list(self._pending.values()), {}
        self._in_transaction = {}
        if pending:  # what was handled gets committed, within the producers' timeouts
            await asyncio.wait(pending, timeout=30)
            for task in pending:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.warning(
                        "consumer %s: commit failed at close: %s",
                        self.config.name,
                        task.exception(),
                    )
                task.cancel()
        await super()._close()
        await self.output.close()


async def _no_handler(session: AsyncSession, envelope: Envelope) -> None:
    raise AssertionError("TransactionalConsumer handles batches only")  # pragma: no cover
