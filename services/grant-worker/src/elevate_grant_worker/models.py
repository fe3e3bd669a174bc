"""grant-worker's tables.

- `gw_grants`: one row per request id (grant id = uuid5 of it, so a replay into an empty
  database names grants the same). An approval fills it in; a cancel or revoke sets `stop`
  — whichever comes first creates the row, and the row's lock decides between them, on
  PostgreSQL and SQLite alike. A stop seen before its approval leaves an `unapproved` row,
  so the late approval is never served. `needs_look` asks the worker to reconcile the
  grant's triple; `gate` holds the stops topic's end offsets when the approval was recorded
  (the replay gate); `rechecked_at` when it passed the re-check that comes before it is
  first served (elevate_grant_worker.recheck).
- `gw_assignments`: one row per assignment triple (account, permission set, user) Elevate
  ever touched: what AWS holds (`absent`/`present`), the recorded intent of an AWS write in
  progress (`creating`/`deleting`, with AWS's request id once known), when to look again
  (`next_check_at`) and the lease epoch of the worker that last wrote it.
- `gw_standing`: assignments never removed (policy list or baseline found in AWS).
- `gw_managed_pairs`: the (account, permission set) pairs under Elevate's management. When a
  pair first comes under management its user assignments already in AWS are recorded as
  the standing baseline; after that, an assignment found present is ours to serve (or
  drift), never new baseline. Rebuilt from grant-worker's own history on the grants topic
  after a replay.

Lock order, everywhere (`service.py`, `worker.py`): the `gw_assignments` row of a triple,
then its `gw_grants` rows (by grant id), then the lease row. A path that knows no triple
(a stop) locks only its grant row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elevate_core.db import Base, UTCDateTime
from sqlalchemy import JSON as SAJSON
from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column


class Grant(Base):
    __tablename__ = "gw_grants"

    grant_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    account_id: Mapped[str | None] = mapped_column(String(32))
    permission_set_arn: Mapped[str | None] = mapped_column(String(255))
    principal_id: Mapped[str | None] = mapped_column(String(128))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(SAJSON)
    state: Mapped[str] = mapped_column(String(16))
    stop_kind: Mapped[str | None] = mapped_column(String(16))  # cancelled | revoked
    stop_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(16))
    needs_look: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    gate: Mapped[dict[str, int] | None] = mapped_column(SAJSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assignment_removed: Mapped[bool | None] = mapped_column(Boolean)
    failure: Mapped[str | None] = mapped_column(Text)
    rechecked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_gw_grants_triple", "account_id", "permission_set_arn", "principal_id"),
        Index("ix_gw_grants_state", "state"),
        Index(
            "ix_gw_grants_needs_look",
            "needs_look",
            postgresql_where=text("needs_look"),
            sqlite_where=text("needs_look"),
        ),
    )


class Assignment(Base):
    __tablename__ = "gw_assignments"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    permission_set_arn: Mapped[str] = mapped_column(String(255), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # absent | present | creating | deleting
    request_id: Mapped[str | None] = mapped_column(String(128))  # AWS's, once known
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    epoch: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    # Drift, as the reconciler sweep saw it: `found` present though no grant of ours made
    # or adopted it; `missing` gone though a grant needs it. `version` counts writes, so a
    # sweep only applies what it listed to rows nothing changed meanwhile.
    found: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    missing: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    drift_reported: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        Index("ix_gw_assignments_state", "state"),
        Index("ix_gw_assignments_next_check_at", "next_check_at"),
    )


class ManagedPair(Base):
    __tablename__ = "gw_managed_pairs"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    permission_set_arn: Mapped[str] = mapped_column(String(255), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime)


class Standing(Base):
    __tablename__ = "gw_standing"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    permission_set_arn: Mapped[str] = mapped_column(String(255), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # baseline | policy
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionCut(Base):
    """A session cut to put in place (docs/grant-worker.md): recorded in the transaction
    that records an assignment's removal, applied by `elevate_grant_worker.cuts`.

    `state`: `pending` → `applied` (the Deny is in the inline policy and provisioned to the
    account), `held` (another grant, a standing entry or a group assignment still backs the
    user's role there: nothing cut), `off` (the permission set is no longer opted in) or
    `refused` (size limit, foreign unprovisioned changes, an unreadable policy: alerted)."""

    __tablename__ = "gw_session_cuts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    account_id: Mapped[str] = mapped_column(String(32))
    permission_set_arn: Mapped[str] = mapped_column(String(255))
    principal_id: Mapped[str] = mapped_column(String(128))
    cut_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_gw_session_cuts_pending", "state", "permission_set_arn"),)


class PermissionSetPolicy(Base):
    """Per permission set whose inline policy Elevate wrote: what it wrote last (and the
    text it is about to write), so an unprovisioned change that is not Elevate's is told
    apart from Elevate's own; and when its next statement expires."""

    __tablename__ = "gw_permission_set_policies"

    permission_set_arn: Mapped[str] = mapped_column(String(255), primary_key=True)
    # The inline policy Elevate last wrote ("": it deleted it; None: nothing yet) and the
    # one it is about to write (None: no write in progress).
    written: Mapped[str | None] = mapped_column(Text)
    intended: Mapped[str | None] = mapped_column(Text)
    next_expiry: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
