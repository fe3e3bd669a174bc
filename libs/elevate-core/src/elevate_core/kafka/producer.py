"""The one way Elevate produces to Kafka: idempotent, acks=all."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer


def idempotent_producer(bootstrap_servers: str, *, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,  # implies acks=all
        acks="all",
        linger_ms=5,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
    )
