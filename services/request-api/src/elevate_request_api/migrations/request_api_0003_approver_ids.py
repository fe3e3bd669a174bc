"""requests.approver_ids: the approvers' Identity Store user ids

Revision ID: request_api_0003
Revises: request_api_0002

An approver sees a request they decided by their user id, not by their (mutable) user
name. Rows folded before this revision get their ids at their next event; until then only
the requester, the approver groups, auditors and admins see them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "request_api_0003"
down_revision = "request_api_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (nullable): a batch rebuild of `requests` on SQLite would drop the
    # table its timeline rows point at, which the foreign keys refuse once rows exist.
    op.add_column("requests", sa.Column("approver_ids", sa.JSON(), nullable=True))
    op.execute("UPDATE requests SET approver_ids = '[]'")


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("approver_ids")  # (a rebuild on SQLite: downgrades are offline)
