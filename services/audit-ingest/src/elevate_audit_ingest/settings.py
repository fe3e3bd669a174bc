"""audit-ingest's own settings (on top of the shared ones; prefix ELEVATE_)."""

from __future__ import annotations

from datetime import timedelta

from elevate_core.settings import Settings
from pydantic import Field


class AuditSettings(Settings):
    """`ELEVATE_*` settings of audit-ingest, beside the shared ones."""

    # Queue URL or name (a name is resolved with GetQueueUrl); "" turns S3 ingest off.
    cloudtrail_queue: str = "elevate-cloudtrail-notices"
    cloudtrail_wait_seconds: int = Field(default=20, ge=0, le=20)  # SQS long polling
    cloudtrail_visibility_timeout: int = Field(default=300, ge=1, le=43200)
    cloudtrail_max_messages: int = Field(default=10, ge=1, le=10)
    cloudtrail_publish_batch: int = Field(default=500, ge=1)
    # Role sessions outlive the assignment by up to the permission set's session duration.
    grant_grace: timedelta = timedelta(hours=1)
    # How long a record in a managed role waits for the grant that may cover it.
    correlation_wait: timedelta = timedelta(minutes=15)
    # Comma-separated permission set names whose uncovered use is flagged; "" = all.
    managed_permission_sets: str = ""

    def managed(self) -> frozenset[str] | None:
        names = frozenset(n.strip() for n in self.managed_permission_sets.split(",") if n.strip())
        return names or None
