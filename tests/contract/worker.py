"""A separate process for the crash and concurrency contract tests.

python -m tests.contract.worker relay URL      (Kafka: ELEVATE_KAFKA_* from the parent)
python -m tests.contract.worker timers URL [--until-empty]
"""

from __future__ import annotations

import argparse
import asyncio
import os

from elevate_core.db import Database
from elevate_core.relay import OutboxRelay
from elevate_core.timers import Timer, TimerRunner
from sqlalchemy.ext.asyncio import AsyncSession

from tests.contract.tables import Effect
from tests.harness import kafka_from_env


async def relay(url: str) -> None:
    endpoint = kafka_from_env()
    db = Database(url)
    worker = OutboxRelay(db, kafka=endpoint, client_id=f"relay-{os.getpid()}", batch_size=100)
    await worker.run()


async def timers(url: str, until_empty: bool, delay: float) -> None:
    db = Database(url)

    async def handle(session: AsyncSession, timer: Timer) -> None:
        session.add(Effect(source="timer", ref=timer.key, detail=str(os.getpid())))
        if delay:
            await asyncio.sleep(delay)  # widen the window in which two claimants overlap

    runner = TimerRunner(db, {"contract": handle})
    if until_empty:
        while await runner.fire_due():
            pass
        await db.dispose()
        return
    await runner.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("url")
    t = sub.add_parser("timers")
    t.add_argument("url")
    t.add_argument("--until-empty", action="store_true")
    t.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.cmd == "relay":
        asyncio.run(relay(args.url))
    else:
        asyncio.run(timers(args.url, args.until_empty, args.delay))


if __name__ == "__main__":
    main()
