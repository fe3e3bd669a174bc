"""Event-signing keys for `make dev` and the tests: one Ed25519 key per writer of a signed
topic, made at the first start under the data dir and kept (docs/security.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elevate_core.events.signing import SIGNED_TOPICS, generate_keys, writer_of
from elevate_core.kafka.acls import Principal

WRITERS = sorted({writer_of(topic) for topic in SIGNED_TOPICS})


@dataclass(frozen=True)
class LocalEventKeys:
    directory: Path

    @classmethod
    def ensure(cls, directory: Path) -> LocalEventKeys:
        generate_keys(directory, WRITERS)
        return cls(directory)

    @property
    def public_dir(self) -> Path:
        return self.directory / "public"

    def private_key(self, writer: Principal) -> Path:
        return self.directory / f"{writer}.key"

    def environment(self, principal: Principal) -> dict[str, str]:
        """`ELEVATE_EVENT_*` for `principal`: every reader verifies; writers also sign."""
        env = {"ELEVATE_EVENT_VERIFY_KEYS_DIR": str(self.public_dir)}
        if principal in WRITERS:
            env["ELEVATE_EVENT_SIGNING_KEY_FILE"] = str(self.private_key(principal))
        return env

    def settings(self, principal: Principal) -> dict[str, Any]:
        """The same, as `Settings(**…)` keyword arguments."""
        return {
            k.removeprefix("ELEVATE_").lower(): v for k, v in self.environment(principal).items()
        }
