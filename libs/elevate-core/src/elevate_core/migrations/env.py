"""Alembic environment shared by every service; the connection comes from `migrate.upgrade`."""

from __future__ import annotations

from alembic import context

import elevate_core.kafka.dedupe  # noqa: F401 - registers runtime tables on Base.metadata
import elevate_core.outbox  # noqa: F401
import elevate_core.timers  # noqa: F401
from elevate_core.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through elevate_core.migrate.upgrade()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
