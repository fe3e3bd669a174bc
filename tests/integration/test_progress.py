"""Replay gates (elevate_core.progress): how far the stops consumer has read, from this
process's own commits where they suffice and from the broker where they do not."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from elevate_core.errors import TransientError
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.progress import TopicProgress
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port


async def test_own_commits_pass_a_gate_without_asking_the_broker() -> None:
    """Every activation is gated: answering from the consumer's own commits spares it a
    coordinator lookup and an offset fetch. The broker here is away, so any question to it
    fails: only what this process committed itself, on this topic, can answer."""
    progress = TopicProgress(
        kafka=KafkaEndpoint(f"127.0.0.1:{free_port()}"), topic="requests", group="g"
    )
    try:
        progress.observed(TopicPartition("requests", 0), 5)
        progress.observed(TopicPartition("requests", 0), 3)  # an older commit lowers nothing
        progress.observed(TopicPartition("decisions", 1), 99)  # not this topic
        assert await progress.progress_for([{"0": 5}, {"0": 4}]) == {"0": 5}
        with pytest.raises(TransientError):
            await progress.progress_for([{"0": 6}])  # further than we know: ask
        with pytest.raises(TransientError):
            await progress.progress_for([{"0": 5, "1": 1}])  # another topic's commit
    finally:
        await progress.close()


async def test_partitions_another_replica_reads_come_from_the_broker(
    kafka: KafkaBroker, catalog: str
) -> None:
    """With two replicas the group's partitions are split: what this process committed
    is merged with what the broker says the other one committed."""
    topic = f"{catalog}{Topics.REQUESTS}"
    group = f"{catalog}grant-worker.requests"
    endpoint = kafka.endpoint(Principal.GRANT_WORKER)
    other = endpoint.consumer(group_id=group, enable_auto_commit=False)
    await other.start()
    try:
        other.assign([TopicPartition(topic, 1)])
        await other.commit({TopicPartition(topic, 1): 7})  # the other replica's commit
    finally:
        await other.stop()
    progress = TopicProgress(kafka=endpoint, topic=topic, group=group)
    try:
        progress.observed(TopicPartition(topic, 0), 4)
        merged = await progress.progress_for([{"0": 4, "1": 7}])
        assert (merged["0"], merged["1"]) == (4, 7)
        assert not all(merged.get(p, 0) >= o for p, o in {"0": 4, "1": 8}.items()), (
            "a gate past every commit must stay shut"
        )
    finally:
        await progress.close()
