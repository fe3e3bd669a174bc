"""grant-worker 4: the re-check — a grant remembers when it passed the re-check that comes
before it is first served (NULL: not yet; a grant that fails it is `failed`).

Revision ID: grant_worker_0004
Revises: grant_worker_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "grant_worker_0004"
down_revision = "grant_worker_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gw_grants") as batch:
        batch.add_column(sa.Column("rechecked_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gw_grants") as batch:
        batch.drop_column("rechecked_at")
