"""request_activity.result and .outlived: each correlated action's outcome as CloudTrail
gave it (OCSF `status`, with the error code) and whether it came after its grant ended
(audit-ingest's `elevate.outlived-grant` finding), for the request's page.

Revision ID: request_api_0006
Revises: request_api_0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "request_api_0006"
down_revision = "request_api_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain nullable ADD COLUMNs (request_api_0003): rows from before read as unknown.
    op.add_column("request_activity", sa.Column("result", sa.String(length=160), nullable=True))
    op.add_column("request_activity", sa.Column("outlived", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_activity", schema=None) as batch_op:
        batch_op.drop_column("outlived")
        batch_op.drop_column("result")
