"""grant-worker's Prometheus metrics (served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

AWS_CALLS = Counter(
    "elevate_grant_aws_calls_total", "Identity Center calls", ["operation", "outcome"]
)
AWS_THROTTLES = Counter(
    "elevate_grant_aws_throttles_total", "Identity Center throttling answers", ["operation"]
)
AWS_WAITS = Counter(
    "elevate_grant_aws_waits_total",
    "Calls AWS answered with throttling or a conflict: waited out and made again (never a failure)",
    ["operation", "code"],
)
AWS_WAIT_SECONDS = Counter(
    "elevate_grant_aws_wait_seconds_total", "Seconds spent waiting out throttling", ["operation"]
)
IN_FLIGHT_WRITES = Gauge(
    "elevate_grant_in_flight_writes", "Assignment writes sent and not yet finished"
)
REVOCATION_LAG = Histogram(
    "elevate_grant_revocation_lag_seconds",
    "From a grant's end (or revoke) to AWS confirming the deletion",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
EXPIRED_NOT_REVOKED = Gauge(
    "elevate_grant_expired_not_revoked", "Grants past their end whose access is not yet removed"
)
REVOCATION_FAILED = Counter(
    "elevate_grant_revocation_failed_total", "Grants that reached the revocation alert threshold"
)
DRIFT = Counter(
    "elevate_grant_drift_total",
    "Assignments in managed scope that differ from what the grants say",
    ["kind", "action"],
)
SWEEP_CALLS = Counter("elevate_grant_sweep_aws_calls_total", "AWS calls made by sweeps")
SWEEPS = Counter("elevate_grant_sweeps_total", "Reconciler sweeps completed")
GRANT_TRANSITIONS = Counter("elevate_grant_transitions_total", "Grant state changes", ["state"])
SESSION_CUT_FAILURES = Counter(
    "elevate_grant_session_cut_failures_total",
    "Passes over a permission set's session cuts that failed and are retried at the next scan",
    ["reason"],
)
SESSION_CUT_OLDEST_PENDING = Gauge(
    "elevate_grant_session_cut_oldest_pending_seconds",
    "Age of the oldest session cut not yet applied, held or refused (0: none); alert on it",
)
