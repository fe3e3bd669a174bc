"""Policy and directory, as a running service holds them: the hot-reloaded policy,
the cached directory, and an eligibility index rebuilt only when either changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Gauge

from elevate_core.directory.aws import Directory
from elevate_core.directory.errors import DirectoryError
from elevate_core.policy import Evaluator, Policy, PolicyWatcher
from elevate_core.policy.resolve import resolve_users
from elevate_core.policy.semantics import reachability_warnings
from elevate_core.settings import Mode, Settings

log = logging.getLogger(__name__)
REACHABILITY_RECHECK_SECONDS = 600.0
UNREACHABLE_RULES = Gauge(
    "elevate_policy_unreachable_approval_rules",
    "Approval rules whose approver groups cannot reach the required count (or would "
    "leave their own members' requests undecidable)",
)


def policy_resolver(
    directory: Directory, *, warn_account_names: bool = True
) -> Callable[[Policy], Policy]:
    """For PolicyWatcher(resolve=): each new policy version's `users:` and account names
    as ids (and, outside dev, a warning for each account selected by its mutable name)."""
    return lambda policy: resolve_users(
        policy,
        directory.user_id_blocking,
        directory.account_ids_blocking,
        warn_account_names=warn_account_names,
    )


class AccessControl:
    """Workers (`run`/`stop`) that keep the policy and directory fresh, plus the index."""

    def __init__(self, watcher: PolicyWatcher, directory: Directory) -> None:
        if watcher.resolve is None:  # policy users are the user ids they name at load
            watcher.resolve = policy_resolver(directory)
        self.watcher = watcher
        self.directory = directory
        self._stopping = asyncio.Event()
        # Keyed by the policy object: a version resolved after start is a new object.
        self._index: tuple[Policy, float, Evaluator] | None = None
        self._checked_version: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessControl:
        directory = Directory.from_region(
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            person_key=settings.person_key,
        )
        watcher = PolicyWatcher(Path(settings.policy_file))
        watcher.resolve = policy_resolver(
            directory, warn_account_names=settings.mode is not Mode.DEV
        )
        return cls(watcher, directory)

    @property
    def policy(self) -> Policy:
        return self.watcher.policy

    def load(self) -> Policy:
        """Load the policy now (startup): a process must not serve without one."""
        return self.watcher.load()

    async def evaluator(self) -> Evaluator:
        """The eligibility index for the policy in force and the current org snapshot."""
        policy = self.watcher.policy
        snapshot = await self.directory.org()
        cached = self._index
        if cached is not None and cached[0] is policy and cached[1] == snapshot.fetched_at:
            return cached[2]
        evaluator = Evaluator(policy, snapshot.accounts.values())
        self._index = (policy, snapshot.fetched_at, evaluator)
        return evaluator

    async def check_reachability(self) -> tuple[str, ...]:
        """Warn (log + metric) about approval rules whose approver groups, as the
        Identity Store has them now, cannot reach their required count."""
        policy = self.watcher.policy
        groups = {g for rule in policy.approval_rules.values() for g in rule.approver_groups}
        members = await self.directory.group_members(sorted(groups))
        warnings = tuple(str(issue) for issue in reachability_warnings(policy, members))
        UNREACHABLE_RULES.set(len(warnings))
        for warning in warnings:
            log.warning("policy %s: %s", policy.version, warning)
        self._checked_version = policy.version
        return warnings

    async def _check_reachability_forever(self) -> None:
        while not self._stopping.is_set():
            if self._checked_version != self.watcher.policy.version:
                try:
                    await self.check_reachability()
                except DirectoryError as exc:
                    log.info("approver reachability not checked yet: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REACHABILITY_RECHECK_SECONDS)
            self._checked_version = None  # memberships change too: look again

    async def run(self) -> None:
        await self.directory.start()
        checker = asyncio.create_task(self._check_reachability_forever())
        try:
            await self.watcher.run(self._stopping)
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
            with contextlib.suppress(Exception):
                await self.directory.aclose()

    async def stop(self) -> None:
        self._stopping.set()
