"""grant-worker 2: level-triggered — grants carry their stop, a replay gate and a "look"
flag; stops seen before an approval become unapproved grant rows; triples know when to be
looked at again and which lease epoch wrote them. The activation and expiry timers go:
desired state is computed, not remembered.

Revision ID: grant_worker_0002
Revises: grant_worker_0001
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from elevate_core.db import UTCDateTime

revision = "grant_worker_0002"
down_revision = "grant_worker_0001"
branch_labels = None
depends_on = "runtime_0004"

_GRANT_NS = uuid.UUID("6f0c2a8e-4a8b-4c61-9a53-3f1d5f0e7a11")  # service.grant_id_for's
# Old transitional states map onto the new ones; the worker re-derives the rest.
_STATES = {
    "activating": "scheduled",
    "revoking": "active",
    "cancelled": "ended",
    "lapsed": "ended",
}


def upgrade() -> None:
    with op.batch_alter_table("gw_grants") as batch:
        batch.alter_column("account_id", existing_type=sa.String(32), nullable=True)
        batch.alter_column("permission_set_arn", existing_type=sa.String(255), nullable=True)
        batch.alter_column("principal_id", existing_type=sa.String(128), nullable=True)
        batch.alter_column("start_at", existing_type=UTCDateTime(), nullable=True)
        batch.alter_column("end_at", existing_type=UTCDateTime(), nullable=True)
        batch.alter_column("snapshot", existing_type=sa.JSON(), nullable=True)
        batch.alter_column("stop_requested_at", new_column_name="stop_at")
        batch.add_column(sa.Column("stop_kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("needs_look", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=True))
    op.create_index(
        "ix_gw_grants_needs_look",
        "gw_grants",
        ["needs_look"],
        postgresql_where=sa.text("needs_look"),
        sqlite_where=sa.text("needs_look"),
    )
    grants = sa.table(
        "gw_grants",
        sa.column("state", sa.String),
        sa.column("end_reason", sa.String),
        sa.column("stop_kind", sa.String),
        sa.column("needs_look", sa.Boolean),
    )
    for old, new in _STATES.items():
        op.execute(grants.update().where(grants.c.state == old).values(state=new))
    op.execute(
        grants.update()
        .where(grants.c.state == "active", grants.c.end_reason.in_(["revoked", "cancelled"]))
        .values(stop_kind=grants.c.end_reason, needs_look=True)
    )
    bind = op.get_bind()
    stops = bind.execute(
        sa.text(
            "SELECT request_id, kind, at FROM gw_stops "
            "WHERE request_id NOT IN (SELECT request_id FROM gw_grants)"
        )
    ).all()
    unapproved = sa.table(
        "gw_grants",
        sa.column("grant_id", sa.String),
        sa.column("request_id", sa.String),
        sa.column("state", sa.String),
        sa.column("stop_kind", sa.String),
        sa.column("stop_at", UTCDateTime()),
        sa.column("created_at", UTCDateTime()),
        sa.column("needs_look", sa.Boolean),
    )
    for request_id, kind, raw_at in stops:
        at = datetime.fromisoformat(raw_at) if isinstance(raw_at, str) else raw_at
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        op.execute(
            unapproved.insert().values(
                grant_id=str(uuid.uuid5(_GRANT_NS, str(request_id))),
                request_id=request_id,
                state="unapproved",
                stop_kind=kind,
                stop_at=at,
                created_at=at,
                needs_look=False,
            )
        )
    op.drop_table("gw_stops")
    with op.batch_alter_table("gw_assignments") as batch:
        batch.add_column(sa.Column("next_check_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("epoch", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
    op.create_index("ix_gw_assignments_next_check_at", "gw_assignments", ["next_check_at"])
    op.create_table(
        "gw_managed_pairs",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("permission_set_arn", sa.String(length=255), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "permission_set_arn", name=op.f("pk_gw_managed_pairs")
        ),
    )
    # Pairs Elevate already touched are under management (their baseline was taken then).
    op.execute(
        "INSERT INTO gw_managed_pairs (account_id, permission_set_arn, since) "
        "SELECT account_id, permission_set_arn, MIN(updated_at) FROM gw_assignments "
        "GROUP BY account_id, permission_set_arn"
    )
    op.execute("DELETE FROM timers WHERE kind IN ('grant.activate', 'grant.expire')")


def downgrade() -> None:
    raise NotImplementedError("grant-worker 2 is not reversible: restore from a backup")
