"""Create Elevate's topics (idempotently) with their retention; read back how long the
broker may keep a message (what the dedupe purge must outlast)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code

from elevate_core.errors import PermanentError, TransientError
from elevate_core.events.topics import CATALOG
from elevate_core.kafka.security import KafkaEndpoint

log = logging.getLogger(__name__)
DAY_MS = 24 * 3600 * 1000
# Segments roll at least this often, so a message outlives the retention by at most this
# much: time retention deletes whole segments, once their newest message has aged out.
SEGMENT_MS = 12 * 3600 * 1000
_UNKNOWN_TOPIC = 3


async def ensure_topics(
    kafka: KafkaEndpoint,
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
    admin = kafka.admin(client_id="elevate-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=name,
                num_partitions=partitions or count,
                replication_factor=replication_factor,
                topic_configs={
                    "retention.ms": str(retention_days * DAY_MS),
                    "segment.ms": str(SEGMENT_MS),
                },
            )
            for name, count in wanted.items()
            if name not in existing
        ]
        if missing:
            response = await admin.create_topics(missing)
            _raise_topic_errors(response.topic_errors, principal=kafka.principal)
            log.info("created topics %s", [t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


class TopicsRefusedError(PermanentError):
    """The broker refused to create a topic (most often: this principal may not)."""


def _raise_topic_errors(errors: Iterable[tuple[Any, ...]], *, principal: str) -> None:
    """The create-topics response carries per-topic errors instead of raising them."""
    for topic, code, *message in errors:
        # Another process may win the race; the topic is there either way.
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code)
        detail = message[0] if message and message[0] else error.description
        if code == TopicAuthorizationFailedError.errno:
            detail = f"{principal} may not create topics (the admin principal does): {detail}"
        raise TopicsRefusedError(f"creating topic {topic}: {error.__name__}: {detail}")


async def missing_topics(kafka: KafkaEndpoint, topics: Iterable[str]) -> list[str]:
    """Which of `topics` the broker does not show this principal (absent, or not granted)."""
    admin = kafka.admin(client_id=f"{kafka.security.username or 'elevate'}-topics")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return sorted(set(topics) - existing)


async def longest_stay(kafka: KafkaEndpoint, topics: Iterable[str]) -> timedelta | None:
    """The longest the broker may keep a message of `topics` after its timestamp, as the
    broker is configured now: retention.ms + segment.ms (a segment goes only when its newest
    message has aged out). None if some topic keeps messages for ever (retention -1, or
    compaction). A topic that does not exist holds nothing."""
    wanted = sorted(set(topics))
    if not wanted:
        return timedelta(0)
    admin = kafka.admin(client_id=f"{kafka.security.username or 'elevate'}-topics")
    try:
        await admin.start()
        keys = {"retention.ms": None, "segment.ms": None, "cleanup.policy": None}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs=keys) for name in wanted]
        )
    except Exception as exc:
        raise TransientError(f"describing topics {wanted}: {exc!r}") from exc
    finally:
        await admin.close()
    longest = timedelta(0)
    for response in responses:
        for error, message, _type, name, entries in response.resources:
            if error == _UNKNOWN_TOPIC:
                continue
            if error:
                raise TransientError(f"describing topic {name}: error {error} {message}")
            config = {entry[0]: entry[1] for entry in entries}
            retention, segment = config.get("retention.ms"), config.get("segment.ms")
            if retention is None or segment is None or int(retention) < 0:
                return None  # not known to be bounded: as good as for ever
            if "delete" not in (config.get("cleanup.policy") or "delete"):
                return None
            longest = max(longest, timedelta(milliseconds=int(retention) + int(segment)))
    return longest
