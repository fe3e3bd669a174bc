"""requests.sessions_valid_until: where access ended without a session cut, until when
the role sessions issued before the end could still work (GrantEnded).

Revision ID: request_api_0004
Revises: request_api_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "request_api_0004"
down_revision = "request_api_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (nullable), for the reason given in request_api_0003.
    op.add_column("requests", sa.Column("sessions_valid_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("sessions_valid_until")
