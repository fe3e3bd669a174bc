"""Dead letters that matter are loud, and can be re-driven after a fix: through the service
that wrote them (its outbox, its relay), with their original bytes and identifying headers,
idempotently — on SQLite and PostgreSQL, against the real broker."""

from __future__ import annotations

import uuid

from elevate_core.db import Database
from elevate_core.dlq import Selection, redrive
from elevate_core.events.envelope import Envelope
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.kafka.consumer import Consumer, ConsumerConfig
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.relay import OutboxRelay
from elevate_core.retry import RetryPolicy
from elevate_local.kafka import KafkaBroker
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.tables import Effect
from tests.contract.test_outbox_consumer import record_effect
from tests.harness import create_topics, eventually, headers_of, read_to_end, running

REVOKE = RevokeRequested.ce_type
ALICE = Person(user_name="alice", user_id="u-alice")


def _security_alerts(consumer: str) -> float:
    value = REGISTRY.get_sample_value(
        "elevate_dlq_security_relevant_total", {"consumer": consumer, "type": REVOKE}
    )
    return value or 0.0


async def test_a_dead_lettered_revoke_alerts_and_is_redriven_once(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    topic, dlq = f"{topic_prefix}elevate.requests.v1", f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), topic, dlq, partitions=1)
    outbox = Outbox(source="elevate/request-api", topic_prefix=topic_prefix)
    rid = uuid.uuid4()
    async with db.transaction() as session:
        revoke_id = await outbox.add(
            session, RevokeRequested(request_id=rid, requested_by=ALICE), subject=str(rid)
        )
    relay = OutboxRelay(db, kafka=kafka.endpoint(), client_id="request-api-relay", dlq_topic=dlq)
    bug = True

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if bug and envelope.type == REVOKE:
            raise KeyError("a bug in the revoke handler")
        await record_effect(session, envelope)

    name = f"{topic_prefix}grant-worker.requests"
    consumer = Consumer(
        db,
        ConsumerConfig(name=name, topics=(topic,), kafka=kafka.endpoint(), dlq_topic=dlq),
        handler,
        retry=RetryPolicy(base_delay=0.05, max_delay=0.2),
    )
    before = _security_alerts(name)
    async with running(relay, consumer):
        await eventually(lambda: _count(kafka.endpoint(), dlq, 1), what="the revoke dead-lettered")
        assert _security_alerts(name) == before + 1

        bug = False  # the fix is deployed; now re-drive as request-api, the topic's writer

        async def as_service(service: str) -> list[str]:
            outcomes = await redrive(
                db,
                kafka=kafka.endpoint(),
                dlq_topic=dlq,
                service=service,
                prefix=topic_prefix,
                selection=Selection(types=(REVOKE,)),
            )
            return [o.action for o in outcomes]

        assert await as_service("approval") == ["not-ours"]  # approval may not write requests
        assert await as_service("request-api") == ["redriven"]
        await eventually(lambda: _handled(db, revoke_id), what="the re-driven revoke handled")
        assert await as_service("request-api") == ["already"]

    copies = [r for r in await read_to_end(kafka.endpoint(), topic) if r.key == str(rid).encode()]
    assert len(copies) == 2  # the original and one re-drive, never more
    original, redriven = copies
    assert redriven.value == original.value
    ce = ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time", "ce_specversion")
    assert {h: headers_of(redriven)[h] for h in ce} == {h: headers_of(original)[h] for h in ce}
    assert not any(k.startswith("dlq_") for k in headers_of(redriven))


async def test_a_row_the_relay_moved_aside_is_restored_and_published(
    db: Database, kafka: KafkaBroker, topic_prefix: str
) -> None:
    late, dlq = f"{topic_prefix}elevate.decisions.v1", f"{topic_prefix}elevate.dlq.v1"
    await create_topics(kafka.endpoint(), dlq, partitions=1)
    outbox = Outbox(source="elevate/approval", topic_prefix=topic_prefix)
    rid = uuid.uuid4()
    async with db.transaction() as session:
        await outbox.add_raw(session, topic="elevate.decisions.v1", key=str(rid), value=b"{}")
    relay = OutboxRelay(
        db,
        kafka=kafka.endpoint(),
        client_id="approval-relay",
        dlq_topic=dlq,
        max_row_attempts=2,
        metadata_timeout_ms=1500,
        retry=RetryPolicy(base_delay=0.05, max_delay=0.2),
    )
    async with running(relay):
        await eventually(lambda: _count(kafka.endpoint(), dlq, 1), what="moved aside")
        await create_topics(kafka.endpoint(), late)  # the operator's fix: the topic exists
        outcomes = await redrive(
            db, kafka=kafka.endpoint(), dlq_topic=dlq, service="approval", prefix=topic_prefix
        )
        assert [o.action for o in outcomes] == ["restored"]
        await eventually(lambda: _count(kafka.endpoint(), late, 1), what="published after all")
    async with db.sessions() as s:
        row = (await s.execute(select(OutboxMessage))).scalar_one()
    assert row.sent_at is not None
    assert row.dead_at is None


async def _count(endpoint: KafkaEndpoint, topic: str, n: int) -> bool:
    return len(await read_to_end(endpoint, topic)) >= n


async def _handled(db: Database, ce_id: str) -> bool:
    async with db.sessions() as s:
        return (await s.execute(select(Effect).where(Effect.ref == ce_id))).first() is not None
