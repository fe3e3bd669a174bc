"""notifier tables: known requests, parked notices, deliveries

Revision ID: notifier_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "notifier_0001"
down_revision = None
branch_labels = ("notifier",)
depends_on = "runtime_0001"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifier_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("approval_rule", sa.String(length=256), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_notifier_requests")),
    )
    op.create_table(
        "notifier_parked",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("notice", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifier_parked")),
    )
    op.create_index("ix_notifier_parked_request_id", "notifier_parked", ["request_id"])
    op.create_table(
        "notifier_deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("slack_channel", sa.String(length=64), nullable=True),
        sa.Column("slack_ts", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifier_deliveries")),
        sa.UniqueConstraint("event_id", "channel", "target", name="uq_notifier_deliveries_once"),
    )
    op.create_index(
        "ix_notifier_deliveries_due", "notifier_deliveries", ["channel", "status", "due_at"]
    )
    op.create_index("ix_notifier_deliveries_request", "notifier_deliveries", ["request_id", "kind"])


def downgrade() -> None:
    op.drop_table("notifier_deliveries")
    op.drop_table("notifier_parked")
    op.drop_table("notifier_requests")
