"""A replay of approval into an empty database publishes nothing new: every event it
writes again carries the id it had the first time (derived from its cause), so every
consumer's dedupe drops it — and its decisions are the same, because they were judged at
the causes' times, not when the replay ran."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from elevate_approval.main import SPEC, build
from elevate_core.app import ServiceContext, consumer_group
from elevate_core.db import Database
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_core.migrate import upgrade
from elevate_core.outbox import OutboxMessage
from elevate_core.progress import TopicProgress
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster
from sqlalchemy import select

from tests.helpers import eventually
from tests.integration.approval.conftest import (
    DecisionsReader,
    Requests,
    directory_for,
    envelope,
    produce,
    running_service,
    settings_for,
    write_policy,
)

pytestmark = pytest.mark.integration


async def _outbox(db: Database) -> list[tuple[str, str, str]]:
    """(ce_id, ce_type, value) of everything the service queued, in order."""
    async with db.sessions() as session:
        rows = (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
        out = []
        for row in rows:
            headers = dict(row.headers)
            out.append((headers["ce_id"], headers["ce_type"], row.value.decode()))
        return out


def _per_request(rows: list[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for ce_id, ce_type, value in rows:
        data = json.loads(value)
        rid = data.get("request_id") or data["snapshot"]["request_id"]
        out.setdefault(rid, []).append((ce_id, ce_type))
    return out


async def test_a_replay_into_an_empty_database_publishes_no_new_event(
    postgres: PostgresCluster,
    tmp_path: Path,
    moto_endpoint: str,
    kafka: KafkaBroker,
    topic_prefix: str,
    requests: Requests,
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", one="3s")
    requests_topic = f"{topic_prefix}{Topics.REQUESTS}"
    auto = requests.submitted("ReadOnlyAccess", account="sandbox-shared")
    approved = requests.submitted("DatabaseAdmin")
    rejected = requests.submitted("DatabaseAdmin")
    expired = requests.submitted("AdministratorAccess")  # one-sre-lead, 3 s
    break_glass = requests.submitted("AdministratorAccess", break_glass=True)
    cancelled = requests.submitted("DatabaseAdmin")
    unknown = requests.decision(requests.submitted("DatabaseAdmin"), "bob")
    await produce(
        kafka.endpoint(),
        requests_topic,
        *(envelope(r, subject=r.request_id) for r in (auto, approved, rejected, expired)),
        envelope(break_glass, subject=break_glass.request_id),
        envelope(cancelled, subject=cancelled.request_id),
        envelope(requests.decision(approved, "bob"), subject=approved.request_id),
        envelope(requests.decision(approved, "alice"), subject=approved.request_id),
        envelope(requests.decision(approved, "frank"), subject=approved.request_id),
        envelope(requests.decision(rejected, "bob", approve=False), subject=rejected.request_id),
        envelope(requests.decision(cancelled, "bob"), subject=cancelled.request_id),
        envelope(requests.cancelled(cancelled), subject=cancelled.request_id),
        envelope(unknown, subject=unknown.request_id),
    )

    async def run(suffix: str) -> list[tuple[str, str, str]]:
        db = Database(postgres.create_database(f"t_{uuid.uuid4().hex[:12]}"))
        await upgrade(db, SPEC.migrations)
        settings = settings_for(
            pg_url=db.url,
            policy_file=policy,
            moto_endpoint=moto_endpoint,
            kafka=kafka.endpoint(Principal.APPROVAL),
            topic_prefix=topic_prefix,
        ).model_copy(update={"consumer_group_suffix": suffix})
        ctx = ServiceContext(settings=settings, db=db)
        build(ctx, directory=directory_for(moto_endpoint))
        progress = TopicProgress(
            kafka=kafka.endpoint(Principal.APPROVAL),
            topic=requests_topic,
            group=consumer_group(settings, "approval"),
        )
        try:
            async with running_service(ctx):
                # Positive signals: the consumer has committed the whole topic, and the
                # expiry (the last outcome, 3 s + the grace later) has been queued.
                await eventually(progress.caught_up, timeout=60)

                async def expired_queued() -> bool:
                    return any("request.expired" in t for _, t, _ in await _outbox(db))

                await eventually(expired_queued, timeout=60)
            return await _outbox(db)
        finally:
            await progress.close()
            await db.dispose()

    live = await run("")
    async with DecisionsReader(kafka.endpoint(), f"{topic_prefix}{Topics.DECISIONS}") as reader:
        await reader.wait_for(lambda: len(reader.records) >= len(live), what="all published")
    published = {ce_id for _, ce_id, _ in reader.records}
    assert {ce_id for ce_id, _, _ in live} == published

    replayed = await run("-replay")
    # The same events under the same ids: downstream dedupe drops every one of them.
    # (Partitions interleave differently in a replay; per request the order is the same.)
    assert _per_request(replayed) == _per_request(live)
    assert {ce_id for ce_id, _, _ in replayed} - published == set()
    kinds = {t.split(".")[-2] for _, t, _ in live}
    assert {"approved", "rejected", "expired", "used", "refused", "recorded"} <= kinds
