"""requests.sessions_cut (GrantEnded), and the portal's server-side state: sign-ins in
progress (the PKCE verifier and nonce of an authorization-code flow, by its `state`) and
signed-in sessions (by the SHA-256 of the cookie's value, so a database read gives no
usable cookie).

Revision ID: request_api_0005
Revises: request_api_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "request_api_0005"
down_revision = "request_api_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GrantEnded.sessions_cut on the read model; a plain nullable ADD COLUMN (as 0003).
    op.add_column("requests", sa.Column("sessions_cut", sa.Boolean(), nullable=True))
    op.create_table(
        "portal_logins",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("next_path", sa.String(length=512), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_portal_logins")),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_key", sa.String(length=32), nullable=False),
        sa.Column("user_value", sa.String(length=512), nullable=False),
        sa.Column("user_issuer", sa.String(length=512), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_portal_sessions")),
    )
    op.create_index("ix_portal_sessions_expires_at", "portal_sessions", ["expires_at"])
    op.create_index("ix_portal_logins_created_at", "portal_logins", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_portal_logins_created_at", table_name="portal_logins")
    op.drop_index("ix_portal_sessions_expires_at", table_name="portal_sessions")
    op.drop_table("portal_sessions")
    op.drop_table("portal_logins")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("sessions_cut")
