"""dead letters re-driven through this service (so a second re-drive is a no-op)

Revision ID: runtime_0003
Revises: runtime_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "runtime_0003"
down_revision = "runtime_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dlq_redriven",
        sa.Column("dlq_topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ce_id", sa.String(length=255), nullable=True),
        sa.Column("redriven_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dlq_topic", "partition", "offset", name=op.f("pk_dlq_redriven")),
    )


def downgrade() -> None:
    op.drop_table("dlq_redriven")
