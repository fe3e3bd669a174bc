from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from elevate_core.db import Database
from elevate_local.kafka import KafkaBroker

from tests.contract.tables import TestBase
from tests.harness import database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The real migrations, on each backend, plus the tests' own effect table."""
    async with database(database_url, extra=[TestBase.metadata]) as migrated:
        yield migrated


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, for tests that stop and restart it."""
    broker = KafkaBroker(tmp_path / "kafka", ephemeral=True)
    broker.start()
    yield broker
    broker.kill()
