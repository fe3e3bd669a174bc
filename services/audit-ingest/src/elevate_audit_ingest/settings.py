"""audit-ingest's own settings (on top of the shared ones; prefix ELEVATE_)."""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from elevate_core.settings import Mode, Settings
from pydantic import Field, field_validator, model_validator

from elevate_audit_ingest.sources import Source, parse_sources


class AuditSettings(Settings):
    """`ELEVATE_*` settings of audit-ingest, beside the shared ones."""

    # Queue URL or name (a name is resolved with GetQueueUrl); "" turns S3 ingest off.
    cloudtrail_queue: str = "elevate-cloudtrail-notices"
    # Comma-separated `bucket` or `bucket/prefix`: the only objects a notice may make us
    # fetch (sources.py). Required outside dev/test while the queue is on.
    cloudtrail_sources: str = ""
    cloudtrail_wait_seconds: int = Field(default=20, ge=0, le=20)  # SQS long polling
    cloudtrail_visibility_timeout: int = Field(default=300, ge=1, le=43200)
    cloudtrail_max_messages: int = Field(default=10, ge=1, le=10)
    # Log files read and published at once (each holds a chunk and a publish batch).
    cloudtrail_parallel_files: int = Field(default=4, ge=1, le=64)
    cloudtrail_publish_batch: int = Field(default=500, ge=1)
    # Role sessions outlive the assignment by up to the permission set's session duration.
    grant_grace: timedelta = timedelta(hours=1)
    # How long a record in a managed role waits for the grant that may cover it.
    correlation_wait: timedelta = timedelta(minutes=15)
    # Comma-separated permission set names whose uncovered use is flagged; "" = all.
    managed_permission_sets: str = ""

    @field_validator("cloudtrail_sources")
    @classmethod
    def _sources_parse(cls, value: str) -> str:
        parse_sources(value)
        return value

    @model_validator(mode="after")
    def _sources_required(self) -> Self:
        if self.mode is Mode.PROD and self.cloudtrail_queue and not self.sources():
            raise ValueError(
                "cloudtrail_sources: list the trail's bucket (bucket or bucket/prefix, "
                "comma-separated) outside dev/test mode, or any notice on the queue could "
                "make audit-ingest fetch any object its role can read"
            )
        return self

    def sources(self) -> tuple[Source, ...]:
        return parse_sources(self.cloudtrail_sources)

    def managed(self) -> frozenset[str] | None:
        names = frozenset(n.strip() for n in self.managed_permission_sets.split(",") if n.strip())
        return names or None
