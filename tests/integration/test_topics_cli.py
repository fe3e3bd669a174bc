"""`elevate topics create`: only the admin principal may create Elevate's topics; a
service's principal is refused by the broker, with an error that says why. (Sync tests:
the command runs its own event loop.)"""

from __future__ import annotations

import asyncio
import io

import pytest
from elevate_core.cli import main
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint
from elevate_local.kafka import KafkaBroker

from tests.harness import end_offsets


def _run(monkeypatch: pytest.MonkeyPatch, kafka: KafkaEndpoint, prefix: str) -> tuple[int, str]:
    for name, value in kafka.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ELEVATE_MODE", "test")
    monkeypatch.setenv("ELEVATE_TOPIC_PREFIX", prefix)
    out, err = io.StringIO(), io.StringIO()
    code = main(["topics", "create"], out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def test_only_the_admin_principal_creates_the_topics(
    monkeypatch: pytest.MonkeyPatch, kafka: KafkaBroker, topic_prefix: str
) -> None:
    kafka.allow(topic_prefix)
    code, said = _run(monkeypatch, kafka.endpoint(Principal.REQUEST_API), topic_prefix)
    assert code == 1
    assert "TopicAuthorizationFailedError" in said
    assert "request-api may not create topics" in said

    code, said = _run(monkeypatch, kafka.endpoint(Principal.ADMIN), topic_prefix)
    assert code == 0, said
    assert said.startswith("6 topics created")
    assert asyncio.run(end_offsets(kafka.endpoint(), f"{topic_prefix}elevate.decisions.v1"))

    code, said = _run(monkeypatch, kafka.endpoint(Principal.ADMIN), topic_prefix)
    assert (code, said.strip()) == (0, "0 topics created: (all present)")


def test_the_topics_job_needs_only_kafka_settings_and_sets_the_partitions(
    monkeypatch: pytest.MonkeyPatch, kafka: KafkaBroker, topic_prefix: str
) -> None:
    """The Helm chart's topics Job runs in prod mode with nothing but the admin principal's
    Kafka settings: no database, policy or identity provider is its business."""
    kafka.allow(topic_prefix)
    for name, value in kafka.endpoint(Principal.ADMIN).environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ELEVATE_MODE", "prod")
    monkeypatch.setenv("ELEVATE_TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("ELEVATE_TOPIC_RETENTION_DAYS", "7")
    out, err = io.StringIO(), io.StringIO()
    code = main(["topics", "create", "--partitions", "2"], out=out, err=err)
    assert code == 0, err.getvalue()
    offsets = asyncio.run(end_offsets(kafka.endpoint(), f"{topic_prefix}elevate.grants.v1"))
    assert sorted(offsets) == [0, 1]

    monkeypatch.setenv("ELEVATE_POLICY_FILE", "/nowhere/policy.yaml")
    code = main(["topics", "create"], out=out, err=err)
    assert code == 2
    assert "ELEVATE_POLICY_FILE: unknown setting" in err.getvalue()
