"""Integration tests run the services with their own Kafka principals, as production does:
the broker enforces the ACL table on them (docs/security.md)."""

from __future__ import annotations

import pytest
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_local.kafka import KafkaBroker


@pytest.fixture
async def catalog(kafka: KafkaBroker, topic_prefix: str) -> str:
    """This test's topics (`topic_prefix` + the catalog), created by the admin principal
    — services may not create topics — and the ACL table granted on them. Returns the
    prefix."""
    kafka.allow(topic_prefix)
    await ensure_topics(kafka.endpoint(Principal.ADMIN), prefix=topic_prefix)
    return topic_prefix
