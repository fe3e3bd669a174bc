"""One Alembic chain per service, on one shared script directory.

The shared runtime's tables (outbox, processed events, timers) have their own
versions here; each service adds a versions folder of its own whose first revision
depends on the runtime's. `upgrade()` runs at service start, before any worker.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

# The shared runtime's models, so Base.metadata is whole wherever migrations run.
from elevate_core import dlq, lease, outbox, timers  # noqa: F401
from elevate_core.db import Database
from elevate_core.kafka import dedupe  # noqa: F401

SCRIPT_DIR = Path(__file__).parent / "migrations"
RUNTIME_VERSIONS = SCRIPT_DIR / "versions"


def alembic_config(service_versions: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_DIR))
    locations = [str(RUNTIME_VERSIONS)]
    if service_versions is not None:
        locations.append(str(service_versions))
    config.set_main_option("version_locations", " ".join(locations))
    config.set_main_option("path_separator", "space")
    return config


async def upgrade(db: Database, service_versions: Path | None = None) -> None:
    config = alembic_config(service_versions)

    def _run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")

    async with db.engine.begin() as conn:
        await conn.run_sync(_run)
