"""grant-worker 3: drift — triples remember what the reconciler sweep found (an assignment
no grant of ours made, one a grant needs gone) and count their writes.

Revision ID: grant_worker_0003
Revises: grant_worker_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "grant_worker_0003"
down_revision = "grant_worker_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gw_assignments") as batch:
        batch.add_column(sa.Column("found", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("missing", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("drift_reported", sa.Boolean(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("gw_assignments") as batch:
        batch.drop_column("version")
        batch.drop_column("drift_reported")
        batch.drop_column("missing")
        batch.drop_column("found")
