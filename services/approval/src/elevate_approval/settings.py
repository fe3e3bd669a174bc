"""approval's own settings (on top of the shared ones; prefix ELEVATE_)."""

from __future__ import annotations

from elevate_core.settings import Settings
from pydantic import Field


class ApprovalSettings(Settings):
    # How often the policy file is re-read (hot reload; the last good one stays in force).
    policy_poll_seconds: float = Field(default=5.0, gt=0)
    # How often elevate_approval_pending_requests is recomputed from the database.
    pending_gauge_seconds: float = Field(default=30.0, gt=0)
    # An expiry fires this long after the deadline, so a decision made before the deadline
    # but still in request-api's outbox is read first (and a replay decides the same).
    expiry_grace_seconds: float = Field(default=5.0, ge=0)
