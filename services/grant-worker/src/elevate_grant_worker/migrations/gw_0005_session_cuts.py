"""grant-worker 5: session cuts — the cuts to put in place and, per permission set, the
inline policy Elevate last wrote.

Revision ID: grant_worker_0005
Revises: grant_worker_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "grant_worker_0005"
down_revision = "grant_worker_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gw_session_cuts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("permission_set_arn", sa.String(255), nullable=False),
        sa.Column("principal_id", sa.String(128), nullable=False),
        sa.Column("cut_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_gw_session_cuts_pending", "gw_session_cuts", ["state", "permission_set_arn"]
    )
    op.create_table(
        "gw_permission_set_policies",
        sa.Column("permission_set_arn", sa.String(255), primary_key=True),
        sa.Column("written", sa.Text(), nullable=True),
        sa.Column("intended", sa.Text(), nullable=True),
        sa.Column("next_expiry", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gw_permission_set_policies")
    op.drop_index("ix_gw_session_cuts_pending", table_name="gw_session_cuts")
    op.drop_table("gw_session_cuts")
