"""grant-worker tables: grants, assignments (intents), standing, stops

Revision ID: grant_worker_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "grant_worker_0001"
down_revision = None
branch_labels = ("grant_worker",)
depends_on = "runtime_0001"

_TRIPLE = (
    sa.Column("account_id", sa.String(length=32), nullable=False),
    sa.Column("permission_set_arn", sa.String(length=255), nullable=False),
    sa.Column("principal_id", sa.String(length=128), nullable=False),
)


def _triple() -> list[sa.Column[str]]:
    return [c._copy() for c in _TRIPLE]


def upgrade() -> None:
    op.create_table(
        "gw_grants",
        sa.Column("grant_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        *_triple(),
        sa.Column("start_at", UTCDateTime(), nullable=False),
        sa.Column("end_at", UTCDateTime(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.Column("stop_requested_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("assignment_removed", sa.Boolean(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_gw_grants")),
        sa.UniqueConstraint("request_id", name=op.f("uq_gw_grants_request_id")),
    )
    op.create_index(
        "ix_gw_grants_triple", "gw_grants", ["account_id", "permission_set_arn", "principal_id"]
    )
    op.create_index("ix_gw_grants_state", "gw_grants", ["state"])
    op.create_table(
        "gw_assignments",
        *_triple(),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("alerted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "permission_set_arn", "principal_id", name=op.f("pk_gw_assignments")
        ),
    )
    op.create_index("ix_gw_assignments_state", "gw_assignments", ["state"])
    op.create_table(
        "gw_standing",
        *_triple(),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "permission_set_arn", "principal_id", name=op.f("pk_gw_standing")
        ),
    )
    op.create_table(
        "gw_stops",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_gw_stops")),
    )


def downgrade() -> None:
    op.drop_table("gw_stops")
    op.drop_table("gw_standing")
    op.drop_index("ix_gw_assignments_state", table_name="gw_assignments")
    op.drop_table("gw_assignments")
    op.drop_index("ix_gw_grants_state", table_name="gw_grants")
    op.drop_index("ix_gw_grants_triple", table_name="gw_grants")
    op.drop_table("gw_grants")
