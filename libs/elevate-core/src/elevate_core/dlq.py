"""Re-driving dead letters after a fix (`elevate dlq list|redrive`, docs/runbook.md).

A dead letter is re-published with its original bytes, key and headers (the `dlq_*`
headers dropped) **through the service that first wrote it**: the command runs with that
service's settings and writes into that service's own outbox, so its relay — with the
service's Kafka principal, under the per-writer ACLs — publishes it, and any signature the
writer put on it still holds. Consumers that handled the event before drop it on `ce_id`.

- A message a *consumer* dead-lettered is copied into the writer's outbox.
- A row the writer's own *relay* moved aside (`dlq_origin_outbox_id`) is put back: its
  `dead_at` is cleared and the relay tries it again.

Re-driving is idempotent: each DLQ offset re-driven is recorded (`dlq_redriven`) in the
same transaction, so running the command twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from aiokafka import TopicPartition
from sqlalchemy import BigInteger, Integer, String, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from elevate_core.db import Base, Database, UTCDateTime, utcnow
from elevate_core.events.topics import Topics
from elevate_core.kafka import acls
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.notify import mark
from elevate_core.outbox import CHANNEL, OutboxMessage
from elevate_core.settings import Settings


class DlqRedriven(Base):
    """DLQ offsets already re-driven by this service (so a second run is a no-op)."""

    __tablename__ = "dlq_redriven"

    dlq_topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    ce_id: Mapped[str | None] = mapped_column(String(255))
    redriven_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    @property
    def origin_topic(self) -> str:
        return self.header("dlq_origin_topic") or ""

    @property
    def ce_type(self) -> str:
        return self.header("ce_type") or "raw"

    @property
    def original_headers(self) -> list[tuple[str, str]]:
        return [
            (k, v.decode(errors="replace")) for k, v in self.headers if not k.startswith("dlq_")
        ]


@dataclass(frozen=True, slots=True)
class Outcome:
    letter: DeadLetter
    action: str  # "redriven" | "restored" | "already" | "not-ours" | "filtered" | "no-value"


def topics_written_by(service: str, *, prefix: str = "") -> set[str]:
    """The topics `service` writes events to (from the ACL table; the DLQ aside)."""
    try:
        principal = acls.Principal(service)
    except ValueError:
        return set()
    return {f"{prefix}{topic}" for topic in acls.writes(principal) - {Topics.DLQ}}


async def read_dead_letters(
    kafka: KafkaEndpoint,
    dlq_topic: str,
    *,
    from_offset: int = 0,
    to_offset: int | None = None,
    client_id: str = "elevate-dlq",
) -> list[DeadLetter]:
    """DLQ messages with `from_offset <= offset < to_offset` (up to the current end)."""
    consumer = kafka.consumer(enable_auto_commit=False, client_id=client_id)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        if dlq_topic not in await consumer.topics():
            return letters  # no dead letter was ever written
        partitions = [TopicPartition(dlq_topic, p) for p in await _partitions(kafka, dlq_topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            end = ends[tp] if to_offset is None else min(ends[tp], to_offset)
            if from_offset >= end:
                continue
            consumer.seek(tp, from_offset)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                letters.extend(
                    DeadLetter(r.partition, r.offset, r.key, r.value, tuple(r.headers))
                    for r in batch.get(tp, [])
                    if r.offset < end
                )
    finally:
        await consumer.stop()
    return letters


async def _partitions(kafka: KafkaEndpoint, topic: str) -> list[int]:
    admin = kafka.admin(client_id="elevate-dlq-admin")
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(p["partition"]) for p in described["partitions"])


async def redrive_one(
    session: AsyncSession, letter: DeadLetter, *, dlq_topic: str, writes: set[str]
) -> str:
    """Re-drive one dead letter in the caller's transaction; returns what was done."""
    if letter.origin_topic not in writes:
        return "not-ours"
    key = (dlq_topic, letter.partition, letter.offset)
    if await session.get(DlqRedriven, key) is not None:
        return "already"
    outbox_id = letter.header("dlq_origin_outbox_id")
    if outbox_id is not None and outbox_id.isdigit():
        action = "restored"
        result = await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == int(outbox_id), OutboxMessage.sent_at.is_(None))
            .values(dead_at=None, attempts=0, last_error=None)
        )
        if not getattr(result, "rowcount", 0):
            return "already"  # sent meanwhile, or purged
    elif letter.value is None:
        return "no-value"
    else:
        action = "redriven"
        session.add(
            OutboxMessage(
                topic=letter.origin_topic,  # already carries the deployment's prefix
                key=letter.key.decode() if letter.key is not None else None,
                value=letter.value,
                headers=[[k, v] for k, v in letter.original_headers],
                created_at=utcnow(),
                attempts=0,
            )
        )
    session.add(
        DlqRedriven(
            dlq_topic=dlq_topic,
            partition=letter.partition,
            offset=letter.offset,
            ce_id=letter.header("ce_id"),
            redriven_at=utcnow(),
        )
    )
    await mark(session, CHANNEL)
    return action


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: an offset range (end exclusive) and optionally some types."""

    from_offset: int = 0
    to_offset: int | None = None
    types: tuple[str, ...] = ()

    def wants(self, letter: DeadLetter) -> bool:
        return not self.types or letter.ce_type in self.types


async def redrive(
    db: Database,
    *,
    kafka: KafkaEndpoint,
    dlq_topic: str,
    service: str,
    prefix: str = "",
    selection: Selection = Selection(),
    dry_run: bool = False,
) -> list[Outcome]:
    """Re-drive the selected dead letters this service wrote; one transaction each."""
    writes = topics_written_by(service, prefix=prefix)
    outcomes: list[Outcome] = []
    for letter in await read_dead_letters(
        kafka, dlq_topic, from_offset=selection.from_offset, to_offset=selection.to_offset
    ):
        if not selection.wants(letter):
            outcomes.append(Outcome(letter, "filtered"))
            continue
        if dry_run:
            ours = letter.origin_topic in writes
            outcomes.append(Outcome(letter, "would-redrive" if ours else "not-ours"))
            continue
        async with db.transaction() as session:
            action = await redrive_one(session, letter, dlq_topic=dlq_topic, writes=writes)
        outcomes.append(Outcome(letter, action))
    return outcomes


# ---- the `elevate dlq` commands ----


async def print_dead_letters(settings: Settings, selection: Selection, out: TextIO) -> int:
    for letter in await read_dead_letters(
        settings.kafka,
        settings.topic(Topics.DLQ),
        from_offset=selection.from_offset,
        to_offset=selection.to_offset,
    ):
        if selection.wants(letter):
            print(
                f"{letter.partition}:{letter.offset}\t{letter.ce_type}\t{letter.origin_topic}"
                f"\t{letter.header('dlq_consumer')}\t{letter.header('dlq_error')}",
                file=out,
            )
    return 0


async def redrive_command(
    settings: Settings, selection: Selection, *, dry_run: bool, out: TextIO
) -> int:
    db = Database(settings.resolved_database_url())  # migrated by the service itself
    try:
        outcomes = await redrive(
            db,
            kafka=settings.kafka,
            dlq_topic=settings.topic(Topics.DLQ),
            service=settings.service_name,
            prefix=settings.topic_prefix,
            selection=selection,
            dry_run=dry_run,
        )
    finally:
        await db.dispose()
    for o in outcomes:
        if o.action != "filtered":
            print(
                f"{o.letter.partition}:{o.letter.offset}\t{o.letter.ce_type}\t{o.action}", file=out
            )
    done = sum(o.action in ("redriven", "restored") for o in outcomes)
    print(f"{done} re-driven through {settings.service_name}'s outbox", file=out)
    return 0
