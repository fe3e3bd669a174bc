"""grant-worker's own settings (prefix ELEVATE_, like every service's)."""

from __future__ import annotations

from typing import Self

from elevate_core.settings import Settings
from pydantic import Field, model_validator


class GrantWorkerSettings(Settings):
    # Identity Center: discovered with sso-admin ListInstances when not configured.
    sso_instance_arn: str | None = None
    identity_store_id: str | None = None
    # The AWS budget (ARCHITECTURE.md §3): shared with every other tool on the instance.
    aws_calls_per_second: int = Field(default=10, ge=1, le=100)
    aws_max_in_flight_writes: int = Field(default=5, ge=1, le=15)
    # Of those, kept for revocations (slow creates never hold them all); None: 2 of 5.
    aws_writes_reserved_for_revocations: int | None = Field(default=None, ge=0)
    # Connect and read timeout of one AWS request: a request lasts at most twice this.
    aws_timeout_seconds: float = Field(default=5.0, gt=0)
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
    # Every triple with a live grant, an intent or a recorded assignment is re-derived this
    # often, whatever events were (or were not) seen.
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    # The reconciler sweep: lists the managed pairs' user assignments in AWS (at start and
    # this often, at the lowest priority) and reports drift; removes it only when on.
    sweep_interval_seconds: float = Field(default=900.0, gt=0)
    drift_removal: bool = False
    # Leadership lease (fencing). An AWS request starts only while the lease has at least
    # 2 x aws_timeout_seconds left, so it ends before another replica can take over.
    leader_lease_seconds: float = Field(default=15.0, gt=0)
    consumer_session_timeout_ms: int = Field(default=10000, ge=1000)

    @model_validator(mode="after")
    def _lease_outlasts_a_request(self) -> Self:
        usable = self.leader_lease_seconds * 7 / 8  # renewed every 1/8 of it
        if usable <= 2 * self.aws_timeout_seconds:
            raise ValueError(
                "leader_lease_seconds: must exceed 16/7 x aws_timeout_seconds "
                f"({16 / 7 * self.aws_timeout_seconds:.1f}s), or a request could outlive the lease"
            )
        return self

    @property
    def aws_request_bound(self) -> float:
        """The longest one AWS request can take (connect + read timeouts)."""
        return 2 * self.aws_timeout_seconds
