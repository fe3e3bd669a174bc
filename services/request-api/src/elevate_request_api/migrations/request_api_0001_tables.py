"""request-api tables

Revision ID: request_api_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "request_api_0001"
down_revision = None
branch_labels = ("request_api",)
depends_on = "runtime_0001"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("user_name", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_name", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("requester_user_name", sa.String(length=128), nullable=False),
        sa.Column("requester_user_id", sa.String(length=128), nullable=False),
        sa.Column("requester_email", sa.String(length=320), nullable=True),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("account_name", sa.String(length=255), nullable=True),
        sa.Column("ou_path", sa.String(length=1024), nullable=False),
        sa.Column("permission_set_name", sa.String(length=64), nullable=False),
        sa.Column("permission_set_arn", sa.String(length=255), nullable=False),
        sa.Column("start", UTCDateTime(), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(length=128), nullable=True),
        sa.Column("matched_rule", sa.String(length=128), nullable=False),
        sa.Column("approval_rule", sa.String(length=128), nullable=False),
        sa.Column("approver_groups", sa.JSON(), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("review", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_requests_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_requests_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            "ix_requests_requester_created", ["requester_user_name", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_requests_requester_user_name"), ["requester_user_name"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_requests_status"), ["status"], unique=False)

    op.create_table(
        "request_activity",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("operation", sa.String(length=255), nullable=False),
        sa.Column("service", sa.String(length=255), nullable=True),
        sa.Column("severity", sa.String(length=32), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("record_uid", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name=op.f("fk_request_activity_request_id_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_activity")),
    )
    with op.batch_alter_table("request_activity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_activity_request_id"), ["request_id"], unique=False
        )

    op.create_table(
        "request_timeline",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name=op.f("fk_request_timeline_request_id_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_timeline")),
    )
    with op.batch_alter_table("request_timeline", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_timeline_request_id"), ["request_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("request_timeline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_timeline_request_id"))

    op.drop_table("request_timeline")
    with op.batch_alter_table("request_activity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_activity_request_id"))

    op.drop_table("request_activity")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_requests_status"))
        batch_op.drop_index(batch_op.f("ix_requests_requester_user_name"))
        batch_op.drop_index("ix_requests_requester_created")
        batch_op.drop_index(batch_op.f("ix_requests_created_at"))
        batch_op.drop_index(batch_op.f("ix_requests_account_id"))

    op.drop_table("requests")
    op.drop_table("idempotency_keys")
