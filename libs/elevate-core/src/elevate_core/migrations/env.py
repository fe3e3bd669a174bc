"""Alembic environment shared by every service; the connection comes from `migrate.upgrade`."""

from __future__ import annotations

import elevate_core.kafka.dedupe
import elevate_core.outbox
import elevate_core.timers  # noqa: F401
from alembic import context
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
