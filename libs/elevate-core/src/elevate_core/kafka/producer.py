"""The one way Elevate produces to Kafka: idempotent, acks=all."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka import errors as Errors

from elevate_core.kafka.security import KafkaEndpoint


def idempotent_producer(
    kafka: KafkaEndpoint, *, client_id: str, request_timeout_ms: int = 15000
) -> AIOKafkaProducer:
    return kafka.producer(
        client_id=client_id,
        enable_idempotence=True,  # implies acks=all
        acks="all",
        # No linger: the relay hands Kafka whole batches itself (every unsent row at once),
        # so waiting for more records would only delay each hop of a request's path.
        linger_ms=0,
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=200,
    )


class LazyProducer:
    """A producer started on first use and dropped after a failure, so the next use
    reconnects (Kafka may come and go; the caller keeps its data until acknowledged)."""

    def __init__(self, factory: Callable[[], AIOKafkaProducer]) -> None:
        self._factory = factory
        self._producer: AIOKafkaProducer | None = None

    async def get(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


def refused_record(error: BaseException) -> bool:
    """Kafka refused this record or its topic (as opposed to being unreachable): it will
    keep refusing until someone changes the record, the topic or the ACLs."""
    return isinstance(error, _REFUSALS)


def topic_refused(error: BaseException) -> bool:
    """The refusal concerns the whole topic (not authorised, no such topic)."""
    return isinstance(error, _TOPIC_REFUSALS)


_TOPIC_REFUSALS = (
    Errors.TopicAuthorizationFailedError,
    Errors.UnknownTopicOrPartitionError,
    Errors.InvalidTopicError,
)
_REFUSALS = (
    Errors.MessageSizeTooLargeError,
    Errors.RecordListTooLargeError,
    Errors.TopicAuthorizationFailedError,
    Errors.UnknownTopicOrPartitionError,
    Errors.InvalidTopicError,
    Errors.CorruptRecordException,
    Errors.InvalidRequiredAcksError,
    Errors.PolicyViolationError,
    Errors.ClusterAuthorizationFailedError,
    Errors.TransactionalIdAuthorizationFailed,
)
