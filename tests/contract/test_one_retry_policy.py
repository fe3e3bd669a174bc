"""One retry implementation: the consumer, the timers, the relay and the assignment worker
each decide through the `RetryPolicy` they are given — a transient error is retried, a
permanent one dead-lettered (or moved aside, or left to the next pass), by the same rules.

Each component gets a spy policy (the real policy, recording what it was asked), so a
component that kept a retry rule of its own would make its test fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from elevate_core.clock import ManualClock
from elevate_core.db import Database
from elevate_core.errors import TransientError
from elevate_core.events.envelope import Envelope
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.outbox import Outbox, OutboxMessage
from elevate_core.relay import OutboxRelay
from elevate_core.retry import Decision, RetryPolicy
from elevate_core.timers import Timer, TimerRunner, schedule
from elevate_grant_worker.aws import IdentityCenter, Triple
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_grant_worker.worker import AssignmentWorker
from elevate_local.kafka import KafkaBroker
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.test_consumer_retries import _consumer, _publish, _topics
from tests.contract.test_outbox_consumer import effect_count, record_effect
from tests.harness import create_topics, eventually, headers_of, read_to_end, running


@dataclass(frozen=True)
class SpyPolicy(RetryPolicy):
    seen: list[tuple[str, bool]] = field(default_factory=list)

    def decide(self, error: BaseException, *, attempt: int, elapsed: float = 0.0) -> Decision:
        decision = super().decide(error, attempt=attempt, elapsed=elapsed)
        self.seen.append((type(error).__name__, decision.retry))
        return decision


def _spy() -> SpyPolicy:
    return SpyPolicy(base_delay=0.02, max_delay=0.1)


async def test_consumer(db: Database, kafka: KafkaBroker, topic_prefix: str) -> None:
    topic, dlq = await _topics(kafka.endpoint(), topic_prefix)
    flaky, broken = await _publish(kafka.endpoint(), topic, 2)
    spy = _spy()
    failed: set[str] = set()

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.id == flaky.id and envelope.id not in failed:
            failed.add(envelope.id)
            raise TransientError("throttled")
        if envelope.id == broken.id:
            raise KeyError("a bug")
        await record_effect(session, envelope)

    async with running(_consumer(db, kafka.endpoint(), topic_prefix, handler, retry=spy)):
        await eventually(lambda: _dlq_has(kafka.endpoint(), dlq, 1), what="the broken one")
        await eventually(lambda: _effects(db, 1), what="the flaky one, on retry")
    assert ("TransientError", True) in spy.seen
    assert ("KeyError", False) in spy.seen
    [dead] = await read_to_end(kafka.endpoint(), dlq)
    assert headers_of(dead)["ce_id"] == broken.id


async def _dlq_has(endpoint: KafkaEndpoint, dlq: str, n: int) -> bool:
    return len(await read_to_end(endpoint, dlq)) >= n


async def _effects(db: Database, n: int) -> bool:
    return await effect_count(db) >= n


async def test_timers(db: Database) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    spy = _spy()
    calls: dict[str, int] = {}

    async def handle(session: AsyncSession, timer: Timer) -> None:
        calls[timer.key] = calls.get(timer.key, 0) + 1
        if timer.key == "flaky" and calls[timer.key] == 1:
            raise TransientError("database busy")
        if timer.key == "broken":
            raise KeyError("a bug")

    async with db.transaction() as session:
        await schedule(session, kind="k", key="flaky", due_at=clock.now())
        await schedule(session, kind="k", key="broken", due_at=clock.now())
    runner = TimerRunner(db, {"k": handle}, clock=clock, retry=spy)
    await runner.fire_due()
    clock.advance(timedelta(seconds=spy.max_delay * 2))
    await runner.fire_due()
    async with db.sessions() as s:
        timers = {t.key: t for t in (await s.execute(select(Timer))).scalars()}
    assert calls == {"flaky": 2, "broken": 1}
    assert timers["flaky"].fired_at is not None
    assert timers["flaky"].last_error is not None
    assert timers["broken"].fired_at is not None  # dead: kept with its error, not retried
    assert "KeyError" in (timers["broken"].last_error or "")
    assert ("TransientError", True) in spy.seen
    assert ("KeyError", False) in spy.seen


async def test_relay(db: Database, own_kafka: KafkaBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}elevate.requests.v1"
    await create_topics(own_kafka.endpoint(), topic, f"{topic_prefix}elevate.dlq.v1")
    outbox = Outbox(source="elevate/test", topic_prefix=topic_prefix)
    async with db.transaction() as session:
        await outbox.add_raw(
            session, topic="elevate.requests.v1", key="big", value=b"x" * 2_000_000
        )
        await outbox.add_raw(session, topic="elevate.requests.v1", key="ok", value=b"{}")
    spy = _spy()
    relay = OutboxRelay(
        db,
        kafka=own_kafka.endpoint(),
        client_id="spy-relay",
        dlq_topic=f"{topic_prefix}elevate.dlq.v1",
        max_row_attempts=2,
        retry=spy,
    )
    own_kafka.stop()  # first the broker is away: transient, waited out
    async with running(relay):
        await eventually(lambda: _seen(spy, True), what="a transient failure met")
        own_kafka.start()
        await eventually(lambda: _row_dead(db, "big"), what="the refused row moved aside")
        await eventually(lambda: _row_sent(db, "ok"), what="the good row published")
    assert ("MessageSizeTooLargeError", False) in spy.seen
    assert any(retry for _name, retry in spy.seen)


async def _seen(spy: SpyPolicy, retry: bool) -> bool:
    return any(r is retry for _n, r in spy.seen)


async def _row_dead(db: Database, key: str) -> bool:
    async with db.sessions() as s:
        row = (await s.execute(select(OutboxMessage).where(OutboxMessage.key == key))).scalar()
    return row is not None and row.dead_at is not None


async def _row_sent(db: Database, key: str) -> bool:
    async with db.sessions() as s:
        row = (await s.execute(select(OutboxMessage).where(OutboxMessage.key == key))).scalar()
    return row is not None and row.sent_at is not None


class _ScriptedWorker(AssignmentWorker):
    """The real drive loop with scripted steps (the boundary under test is the loop)."""

    def __init__(self, *args: object, script: list[BaseException | None], **kw: object):
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.script = script
        self.calls = 0

    async def step(self, triple: Triple) -> bool:
        self.calls += 1
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return False


async def test_assignment_worker(db: Database) -> None:
    settings = GrantWorkerSettings(mode="test", aws_endpoint_url="http://127.0.0.1:1")
    triple = Triple("111111111111", "arn:aws:sso:::permissionSet/ssoins-1/ps-1", "u-1")
    spy = _spy()

    def worker(script: list[BaseException | None]) -> _ScriptedWorker:
        w = _ScriptedWorker(
            db,
            aws=IdentityCenter(settings),
            outbox=Outbox(source="elevate/test"),
            settings=settings,
            clock=ManualClock(),
            script=script,
        )
        w.retry = spy
        return w

    transient = worker([TransientError("throttled"), TransientError("throttled"), None])
    for _ in range(3):  # each failure ends the task with a backoff; the scan drives it again
        await transient.drive(triple)
    assert transient.calls == 3  # retried twice, then nothing left to do
    assert triple not in transient._backoff
    broken = worker([KeyError("a bug")])
    await broken.drive(triple)
    assert broken.calls == 1  # permanent: left to the next scan, not retried in a loop
    assert spy.seen.count(("TransientError", True)) == 2
    assert ("KeyError", False) in spy.seen
