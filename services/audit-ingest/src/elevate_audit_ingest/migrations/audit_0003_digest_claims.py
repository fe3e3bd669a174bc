"""audit-ingest: where each record was first read (its claim), for Kafka transactions

A batch's database changes commit before its Kafka transaction: a record read again at the
position that claimed it is that delivery retried (emit it again), not a duplicate.

Revision ID: audit_0003
Revises: audit_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "audit_record_digests", sa.Column("claimed_by", sa.String(length=300), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_record_digests") as batch:
        batch.drop_column("claimed_by")
