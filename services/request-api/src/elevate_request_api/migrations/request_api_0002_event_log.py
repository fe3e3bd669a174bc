"""request-api read model as a fold over each request's events

Revision ID: request_api_0002
Revises: request_api_0001

- request_events: every event known for a request, kept even before its request is
  known (the read model folds them once it is).
- request_timeline.event_id: which event an entry shows (entries are re-derived).
- request_activity: no foreign key, so activity that arrives before its request is kept.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "request_api_0002"
down_revision = "request_api_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_request_events")),
    )
    with op.batch_alter_table("request_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_events_request_id"), ["request_id"], unique=False
        )
    with op.batch_alter_table("request_timeline", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=255), nullable=True))
    with op.batch_alter_table("request_activity", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_request_activity_request_id_requests"), type_="foreignkey"
        )


def downgrade() -> None:
    with op.batch_alter_table("request_activity", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_request_activity_request_id_requests"), "requests", ["request_id"], ["id"]
        )
    with op.batch_alter_table("request_timeline", schema=None) as batch_op:
        batch_op.drop_column("event_id")
    with op.batch_alter_table("request_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_events_request_id"))
    op.drop_table("request_events")
