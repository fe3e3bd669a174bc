"""The root of Elevate's shared-runtime errors. Every error says whether retrying
could help, so callers (consumers, timers, relays) know to back off or give up."""

from __future__ import annotations


class ElevateError(Exception):
    """Root exception of elevate_core."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigurationError(ElevateError):
    """A setting is malformed or unsafe; the process must not start."""


class TransientError(ElevateError):
    """Something outside us is briefly unavailable; try again later."""

    retryable = True
