"""A service app's lifespan: hooks and workers start with it, and shutdown stops them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from elevate_core.app import ServiceContext, create_service_app
from elevate_core.db import Database
from elevate_core.settings import Mode, Settings
from elevate_local.ports import free_port


class RecordingWorker:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        self.log.append(f"{self.name} runs")
        await self._stopped.wait()
        self.log.append(f"{self.name} finished")

    async def stop(self) -> None:
        self.log.append(f"{self.name} told to stop")
        self._stopped.set()


def _context(tmp_path: Path) -> ServiceContext:
    # Kafka is unreachable on purpose: topic creation retries in the background and
    # must neither hold up startup nor outlive shutdown
    settings = Settings(
        mode=Mode.TEST,
        service_name="lifespan-test",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
    )
    return ServiceContext(settings=settings, db=Database(f"sqlite+aiosqlite:///{tmp_path}/a.db"))


async def test_startup_runs_hooks_then_workers_and_shutdown_waits_for_them(
    tmp_path: Path,
) -> None:
    ctx = _context(tmp_path)
    log: list[str] = []

    async def hook() -> None:
        log.append("startup hook")

    ctx.startup.append(hook)
    ctx.workers += [RecordingWorker("relay", log), RecordingWorker("consumer", log)]
    app = create_service_app(ctx, title="t")
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0)  # let the worker tasks take their first step
        assert log == ["startup hook", "relay runs", "consumer runs"]
    assert log[3:] == [
        "relay told to stop",
        "consumer told to stop",
        "relay finished",
        "consumer finished",
    ]
    assert all(task.done() and not task.cancelled() for task in ctx.tasks)


async def test_a_service_without_workers_of_its_own_starts_and_stops(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    app = create_service_app(ctx, title="t")
    async with app.router.lifespan_context(app):
        # Only the runtime's own purge runs.
        assert [t.get_name() for t in ctx.tasks] == ["Purger"]
    assert all(t.done() for t in ctx.tasks)
