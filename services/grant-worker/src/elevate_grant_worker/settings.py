"""grant-worker's own settings (prefix ELEVATE_, like every service's)."""

from __future__ import annotations

from elevate_core.settings import Settings
from pydantic import Field


class GrantWorkerSettings(Settings):
    # Identity Center: discovered with sso-admin ListInstances when not configured.
    sso_instance_arn: str | None = None
    identity_store_id: str | None = None
    # The AWS budget (ARCHITECTURE.md §3): shared with every other tool on the instance.
    aws_calls_per_second: int = Field(default=10, ge=1, le=100)
    aws_max_in_flight_writes: int = Field(default=5, ge=1, le=15)
    aws_timeout_seconds: float = Field(default=10.0, gt=0)
    # Status polls: exponential from `poll_initial` to `poll_max` seconds.
    poll_initial_seconds: float = Field(default=1.0, gt=0)
    poll_max_seconds: float = Field(default=15.0, gt=0)
    poll_max_count: int = Field(default=60, ge=1)
    # Retries of throttling / conflict / 5xx / timeouts (jittered exponential backoff).
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    # Activation: how many FAILED creations before GrantFailed.
    activation_attempts: int = Field(default=3, ge=1)
    # Revocation: failures before GrantRevocationFailed; then retried every interval.
    revocation_attempts: int = Field(default=5, ge=1)
    revocation_retry_seconds: float = Field(default=300.0, gt=0)
    # The assignment worker's safety-net scan (it is woken at once on local commits).
    worker_poll_seconds: float = Field(default=5.0, gt=0)
    worker_concurrency: int = Field(default=64, ge=1)
    consumer_session_timeout_ms: int = Field(default=10000, ge=1000)
    # Replays: a new suffix starts a new consumer group at the earliest offset.
    consumer_group_suffix: str = ""
