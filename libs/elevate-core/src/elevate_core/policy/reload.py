"""Hot reload: re-read the policy file when its content changes, keep the last good one.

A Kubernetes ConfigMap update swaps a symlink (`..data`) rather than rewriting the
file, and mtimes can lie, so each poll reads the file and compares its sha256 (the
policy version) with the version in force. A bad new file never replaces a good
policy: the old one stays in force, the failure is logged once per distinct bad
content, and `elevate_policy_reload_failing` is 1 until a good file arrives.

With `resolve` (services with a directory: policy.resolve), each new version has its
`users:` entries and account names resolved to ids before it goes into force: an unknown
user makes that version bad like any invalid file; a directory that cannot answer fails
this poll only (the next one tries again). At start (`load()`) an unknown user refuses
the start, but a directory that cannot answer does not: the policy goes into force
unresolved (`unresolved`: names compare exactly, never case-folded) and each poll tries
again, so an AWS outage never keeps a service from starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from elevate_core.clock import Clock, SystemClock
from elevate_core.policy.errors import PolicyError, PolicyValidationError
from elevate_core.policy.loader import (
    GroupMembers,
    parse_policy,
    policy_version,
    read_policy_bytes,
)
from elevate_core.policy.model import Policy

log = logging.getLogger("elevate.policy")

ReloadOutcome = Literal["unchanged", "reloaded", "failed"]


class _DirectoryUnavailable(PolicyError):
    retryable = True


@dataclass(frozen=True, slots=True)
class _Metrics:
    reloads: Any
    failures: Any
    failing: Any
    version: Any
    loaded: Any


# One set of metrics per registry (tests use their own registries).
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _METRICS[registry] = _Metrics(
            reloads=Counter(
                "elevate_policy_reloads",
                "Policy versions loaded after the first",
                registry=registry,
            ),
            failures=Counter(
                "elevate_policy_reload_failures",
                "Policy files rejected (the last good policy stayed in force)",
                registry=registry,
            ),
            failing=Gauge(
                "elevate_policy_reload_failing",
                "1 while the policy file on disk is invalid or unreadable",
                registry=registry,
            ),
            version=Gauge(
                "elevate_policy_version_info",
                "The policy version in force",
                ["version"],
                registry=registry,
            ),
            loaded=Gauge(
                "elevate_policy_loaded_timestamp_seconds",
                "When the policy in force was loaded",
                registry=registry,
            ),
        )
    return found


class PolicyWatcher:
    """Holds the policy in force for one file and reloads it on change.

    `load()` once at start (raises PolicyError: a process must not start without a
    valid policy), then `poll()` periodically — or `await run(stop)`. Read the policy
    in force from `.policy`; each evaluation result carries its `version`.
    `on_reload` is called with each new policy, from the thread that polled.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        interval: float = 5.0,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        group_members: Callable[[], GroupMembers | None] | None = None,
        on_reload: Callable[[Policy], None] | None = None,
        resolve: Callable[[Policy], Policy] | None = None,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self._clock = clock or SystemClock()
        self._metrics = _metrics_for(registry if registry is not None else REGISTRY)
        self._group_members = group_members
        self._on_reload = on_reload
        self.resolve = resolve  # may block (called from the polling thread)
        self.unresolved = False  # in force without its names resolved (directory was down)
        self._policy: Policy | None = None
        self._bad_version: str | None = None
        self.last_error: PolicyError | None = None
        self.loaded_at: datetime | None = None

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise PolicyError("no policy loaded yet: call load() first")
        return self._policy

    @property
    def failing(self) -> bool:
        """True while the file on disk is not the policy in force because it is bad."""
        return self.last_error is not None

    def _members(self) -> GroupMembers | None:
        if self._group_members is None:
            return None
        try:
            return self._group_members()
        except Exception:
            log.warning(
                "policy: group membership unavailable; skipping reachability checks", exc_info=True
            )
            return None

    def _install(self, policy: Policy) -> None:
        previous = self._policy
        self._policy = policy
        self._bad_version = None
        self.last_error = None
        self.loaded_at = self._clock.now()
        metrics = self._metrics
        if previous is not None:
            metrics.version.remove(previous.version)
            metrics.reloads.inc()
        metrics.version.labels(policy.version).set(1)
        metrics.failing.set(0)
        metrics.loaded.set(self.loaded_at.timestamp())
        log.info(
            "policy %s loaded from %s (was %s)",
            policy.version,
            self.path,
            previous.version if previous else "none",
            extra={"ctx_policy_version": policy.version},
        )
        for warning in policy.warnings:
            log.warning("policy: %s", warning, extra={"ctx_policy_version": policy.version})
        if self._on_reload is not None:
            try:
                self._on_reload(policy)
            except Exception:
                log.exception("policy: on_reload callback failed for %s", policy.version)

    def load(self) -> Policy:
        """Load the file now; raise PolicyError if it is unreadable or invalid."""
        data = read_policy_bytes(self.path)
        policy = parse_policy(data, source=str(self.path), group_members=self._members())
        unresolved = False
        if self.resolve is not None:
            try:
                policy = self._resolved(policy)
            except _DirectoryUnavailable as exc:
                unresolved = True
                log.warning(
                    "policy %s in force unresolved until a poll can: %s", policy.version, exc
                )
        self._install(policy)
        self.unresolved = unresolved
        return policy

    def _resolve_in_force(self, current: Policy) -> ReloadOutcome:
        try:
            resolved = self._resolved(current)
        except _DirectoryUnavailable:
            return "unchanged"
        except PolicyError as exc:
            # It would not have started: nothing older to fall back to, so it stays in
            # force with its users: matching nobody (fail closed), and says so.
            self._policy, self.unresolved = current.resolved({}), False
            self._metrics.failing.set(1)
            log.error("policy %s in force names what the directory lacks: %s", current.version, exc)
            return "failed"
        self._policy, self.unresolved = resolved, False
        log.info("policy %s: names resolved to ids", current.version)
        return "reloaded"

    def _fail(self, error: PolicyError, bad_version: str | None) -> ReloadOutcome:
        already = self.last_error is not None and bad_version == self._bad_version
        self.last_error, self._bad_version = error, bad_version
        self._metrics.failing.set(1)
        if already:
            return "failed"
        self._metrics.failures.inc()
        current = self._policy.version if self._policy else "none"
        details = error.issues if isinstance(error, PolicyValidationError) else (error,)
        log.error(
            "policy reload failed; keeping version %s in force: %s",
            current,
            "; ".join(str(d) for d in details),
            extra={"ctx_policy_version": current, "ctx_rejected_version": bad_version},
        )
        return "failed"

    def poll(self) -> ReloadOutcome:
        """Check the file once: reload if its content changed, keep the old policy if bad."""
        current = self.policy
        try:
            data = read_policy_bytes(self.path)
        except PolicyError as exc:
            return self._fail(exc, None)
        version = policy_version(data)
        if version == current.version:
            if self.last_error is not None:
                log.info("policy file is back to version %s (in force)", version)
                self.last_error, self._bad_version = None, None
                self._metrics.failing.set(0)
            if self.unresolved:
                return self._resolve_in_force(current)
            return "unchanged"
        if version == self._bad_version:
            return "failed"
        try:
            policy = parse_policy(data, source=str(self.path), group_members=self._members())
            if self.resolve is not None:
                policy = self._resolved(policy)
        except _DirectoryUnavailable as exc:
            return self._fail(exc, None)  # not this version's fault: try again next poll
        except PolicyError as exc:
            return self._fail(exc, version)
        self._install(policy)
        self.unresolved = False
        return "reloaded"

    def _resolved(self, policy: Policy) -> Policy:
        assert self.resolve is not None
        try:
            return self.resolve(policy)
        except PolicyError:
            raise
        except Exception as exc:
            raise _DirectoryUnavailable(f"policy users could not be resolved: {exc}") from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every `interval` seconds until `stop` is set. Never raises."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self.poll)
            except Exception:
                log.exception("policy: unexpected error while polling %s", self.path)
