"""audit-ingest: the contents seen per eventID (conflicting records are flagged)

Revision ID: audit_0002
Revises: audit_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_record_digests",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("delivery", sa.String(length=1400), nullable=True),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "digest", name=op.f("pk_audit_record_digests")),
    )


def downgrade() -> None:
    op.drop_table("audit_record_digests")
