"""approval decision log: a counted decider's person key (one vote per person)

Revision ID: approval_0002
Revises: approval_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "approval_0002"
down_revision = "approval_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: decisions counted before this column are compared by user id only.
    op.add_column(
        "approval_decision_log",
        sa.Column("actor_person_key", sa.String(length=320), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("approval_decision_log", "actor_person_key")
