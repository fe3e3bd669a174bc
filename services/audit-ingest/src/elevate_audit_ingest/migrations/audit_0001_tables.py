"""audit-ingest tables: grant index, standing access, pending records, quarantine

Revision ID: audit_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "audit_0001"
down_revision = None
branch_labels = ("audit_ingest",)
depends_on = "runtime_0001"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_grants",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("user_email", sa.String(length=255), nullable=True),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("account_name", sa.String(length=255), nullable=True),
        sa.Column("permission_set_name", sa.String(length=255), nullable=False),
        sa.Column("permission_set_arn", sa.String(length=2048), nullable=False),
        sa.Column("scheduled_start", UTCDateTime(), nullable=False),
        sa.Column("scheduled_end", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(length=255), nullable=True),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_audit_grants")),
    )
    op.create_index(
        "ix_audit_grants_account", "audit_grants", ["account_id", "permission_set_name"]
    )
    op.create_table(
        "audit_standing",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("permission_set_arn", sa.String(length=2048), nullable=False),
        sa.Column("principal_id", sa.String(length=255), nullable=False),
        sa.Column("permission_set_name", sa.String(length=255), nullable=True),
        sa.Column("user_name", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "permission_set_arn", "principal_id", name=op.f("pk_audit_standing")
        ),
    )
    op.create_table(
        "audit_pending_records",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("deadline", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_audit_pending_records")),
    )
    op.create_index(
        op.f("ix_audit_pending_records_account_id"), "audit_pending_records", ["account_id"]
    )
    op.create_table(
        "audit_quarantined_files",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("bucket", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("quarantined_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_quarantined_files")),
    )


def downgrade() -> None:
    op.drop_table("audit_quarantined_files")
    op.drop_index(op.f("ix_audit_pending_records_account_id"), table_name="audit_pending_records")
    op.drop_table("audit_pending_records")
    op.drop_table("audit_standing")
    op.drop_index("ix_audit_grants_account", table_name="audit_grants")
    op.drop_table("audit_grants")
