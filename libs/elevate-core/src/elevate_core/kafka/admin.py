"""Create Elevate's topics (idempotently) with their retention."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from elevate_core.events.topics import CATALOG

log = logging.getLogger(__name__)
DAY_MS = 24 * 3600 * 1000


async def ensure_topics(
    bootstrap_servers: str,
    *,
    prefix: str = "",
    retention_days: int = 30,
    replication_factor: int = 1,
    names: list[str] | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Create any missing catalog topics (or `names`); returns the topics created."""
    wanted = {f"{prefix}{spec.name}": spec.partitions for spec in CATALOG}
    if names is not None:
        wanted = {name: partitions or 3 for name in names}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="elevate-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=partitions or count,
                replication_factor=replication_factor,
                topic_configs={"retention.ms": str(retention_days * DAY_MS)},
            )
            for name, count in wanted.items()
            if name not in existing
        ]
        if missing:
            # Another process may win the race; the topic is there either way.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()
