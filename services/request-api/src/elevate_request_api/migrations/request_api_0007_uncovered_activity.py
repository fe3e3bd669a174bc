"""uncovered_activity: CloudTrail actions in a managed Identity Center role that no grant
or standing assignment covers (audit-ingest's `elevate.uncovered` finding), for the
auditors' page and the requester's own request pages.

Revision ID: request_api_0007
Revises: request_api_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "request_api_0007"
down_revision = "request_api_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uncovered_activity",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("permission_set", sa.String(length=64), nullable=True),
        sa.Column("session_name", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("operation", sa.String(length=255), nullable=False),
        sa.Column("service", sa.String(length=255), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("result", sa.String(length=160), nullable=True),
        sa.Column("record_uid", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uncovered_activity")),
    )
    op.create_index(op.f("ix_uncovered_activity_at"), "uncovered_activity", ["at"])
    op.create_index(
        "ix_uncovered_activity_account_permission_set",
        "uncovered_activity",
        ["account_id", "permission_set"],
    )


def downgrade() -> None:
    op.drop_table("uncovered_activity")
