"""Kafka runtime: outbox relay, idempotent consumer with DLQ, topic admin."""
