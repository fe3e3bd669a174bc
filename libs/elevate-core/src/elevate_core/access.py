"""Policy and directory, as a running service holds them: the hot-reloaded policy,
the cached directory, and an eligibility index rebuilt only when either changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from elevate_core.directory.aws import Directory
from elevate_core.policy import Evaluator, Policy, PolicyWatcher
from elevate_core.settings import Settings


class AccessControl:
    """Workers (`run`/`stop`) that keep the policy and directory fresh, plus the index."""

    def __init__(self, watcher: PolicyWatcher, directory: Directory) -> None:
        self.watcher = watcher
        self.directory = directory
        self._stopping = asyncio.Event()
        self._index: tuple[str, float, Evaluator] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessControl:
        directory = Directory.from_region(
            region=settings.aws_region, endpoint_url=settings.aws_endpoint_url
        )
        return cls(PolicyWatcher(Path(settings.policy_file)), directory)

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
        if cached is not None and cached[0] == policy.version and cached[1] == snapshot.fetched_at:
            return cached[2]
        evaluator = Evaluator(policy, snapshot.accounts.values())
        self._index = (policy.version, snapshot.fetched_at, evaluator)
        return evaluator

    async def run(self) -> None:
        await self.directory.start()
        try:
            await self.watcher.run(self._stopping)
        finally:
            with contextlib.suppress(Exception):
                await self.directory.aclose()

    async def stop(self) -> None:
        self._stopping.set()
