from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from elevate_core.db import Database
from elevate_core.migrate import upgrade
from elevate_local.kafka import KafkaBroker

from tests.contract.tables import TestBase


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The real migrations, on each backend, plus the tests' own effect table."""
    database = Database(database_url)
    await upgrade(database)
    async with database.engine.begin() as conn:
        await conn.run_sync(TestBase.metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, for tests that stop and restart it."""
    broker = KafkaBroker(tmp_path / "kafka", ephemeral=True)
    broker.start()
    yield broker
    broker.kill()
