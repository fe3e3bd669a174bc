"""Forged and unsigned events, told to the security channel. Every reader dead-letters
an event on a signed topic whose signature is missing or wrong (ARCHITECTURE §2); this
worker reads the dead-letter topic (its own group, read-only: it never writes back to
it, so a letter it cannot read cannot loop) and queues one security message per forged
event (keyed by its id, or the letter's position), so a re-read sends nothing twice."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from elevate_core.db import Database
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.retry import DEFAULT_POLICY, Retrying
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_notifier import service
from elevate_notifier.domain import forged_message

log = logging.getLogger("elevate.notifier")

SIGNATURE_ERROR = "SignatureError:"  # how the consumers' dead letters name the refusal


def is_forgery(headers: dict[str, str]) -> bool:
    return headers.get("dlq_error", "").startswith(SIGNATURE_ERROR)


async def queue_refusal(
    session: AsyncSession, *, deps: service.Deps, position: str, headers: dict[str, str]
) -> None:
    message = forged_message(
        topic=headers.get("dlq_origin_topic", "?"),
        ce_type=headers.get("ce_type", ""),
        ce_id=headers.get("ce_id", "?"),
        error=headers.get("dlq_error", "")[:500],
    )
    now = datetime.now(UTC)
    # Every reader of the topic dead-letters the same forgery: one message for all of them.
    ce_id = headers.get("ce_id")
    event_id = f"forged/{ce_id}" if ce_id else f"dlq/{position}"
    for channel, target in service.audience_targets(deps, "security"):
        await service.add_delivery(
            session,
            event_id=event_id,
            channel=channel,
            target=target,
            message=message,
            now=now,
        )


class RefusalWatcher:
    def __init__(
        self, db: Database, deps: service.Deps, *, kafka: KafkaEndpoint, topic: str, group: str
    ) -> None:
        self.db = db
        self.deps = deps
        self.kafka = kafka
        self.topic = topic
        self.group = group
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        retrying = Retrying(DEFAULT_POLICY, component="notifier:refusals", what="the DLQ")
        while not self._stopping.is_set():
            consumer = self.kafka.consumer(
                self.topic,
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                while not self._stopping.is_set():
                    batches = await consumer.getmany(timeout_ms=1000)
                    for records in batches.values():
                        await self._queue(records)
                    if batches:
                        await consumer.commit()  # only after the rows are stored
                    retrying.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: start again
                decision = retrying.failed_outside_work(exc)
                log.warning("refusal watcher: %s", decision.reason)
                await DEFAULT_POLICY.wait(decision, self._stopping)
            finally:
                await consumer.stop()

    async def _queue(self, records: list[Any]) -> None:
        async with self.db.transaction() as session:
            for record in records:
                headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                if is_forgery(headers):
                    position = f"{record.partition}/{record.offset}"
                    await queue_refusal(session, deps=self.deps, position=position, headers=headers)

    async def stop(self) -> None:
        self._stopping.set()
