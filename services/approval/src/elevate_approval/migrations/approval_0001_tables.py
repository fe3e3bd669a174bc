"""approval tables: requests and the append-only decision log

Revision ID: approval_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "approval_0001"
down_revision = None
branch_labels = ("approval",)
depends_on = "runtime_0001"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("requester_user_name", sa.String(length=128), nullable=False),
        sa.Column("requester_user_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("permission_set_name", sa.String(length=64), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("review", sa.String(length=16), nullable=True),
        sa.Column("rule", sa.String(length=256), nullable=True),
        sa.Column("approval_rule", sa.String(length=256), nullable=True),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("submitted_policy_version", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=False),
        sa.Column("deadline", UTCDateTime(), nullable=True),
        sa.Column("expiry_timer_key", sa.String(length=255), nullable=True),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("approved_at", UTCDateTime(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("cancelled_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_approval_requests")),
    )
    op.create_index("ix_approval_requests_status", "approval_requests", ["status"])
    op.create_table(
        "approval_decision_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor_user_name", sa.String(length=128), nullable=False),
        sa.Column("actor_user_id", sa.String(length=128), nullable=False),
        sa.Column("actor_groups", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_decision_log")),
    )
    op.create_index(
        "ix_approval_decision_log_request", "approval_decision_log", ["request_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_approval_decision_log_request", table_name="approval_decision_log")
    op.drop_table("approval_decision_log")
    op.drop_index("ix_approval_requests_status", table_name="approval_requests")
    op.drop_table("approval_requests")
