"""processed events are purged by age: an index on processed_at

Revision ID: runtime_0005
Revises: runtime_0004
"""

from __future__ import annotations

from alembic import op

revision = "runtime_0005"
down_revision = "runtime_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
