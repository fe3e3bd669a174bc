"""The root of every error Elevate raises. Each error says whether retrying could help
(`retryable`) and, where it knows, after how long (`retry_after`, seconds), so the one
retry policy (`elevate_core.retry`) can decide for consumers, timers, relays and workers
alike: retry a transient error with backoff, dead-letter a permanent one at once.
"""

from __future__ import annotations


class ElevateError(Exception):
    """Root exception of the project."""

    retryable: bool = False
    retry_after: float | None = None
    # A transient error that only makes sense for so long (seconds of retrying), e.g.
    # waiting for an event that may never come; after that it is handled as permanent.
    give_up_after: float | None = None

    def __init__(
        self,
        message: str = "",
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        if retry_after is not None:
            self.retry_after = retry_after


class ConfigurationError(ElevateError):
    """A setting is malformed or unsafe; the process must not start."""


class TransientError(ElevateError):
    """Something outside us is briefly unavailable; try again later."""

    retryable = True


class PermanentError(ElevateError):
    """Retrying the same input cannot help (bad data, a bug, a refusal)."""

    retryable = False


class NotYetError(TransientError):
    """Something this work depends on has not happened yet (an event still on its way).
    Retried for `give_up_after` seconds, then dead-lettered rather than stalling."""

    give_up_after = 300.0


class DatabaseUnavailableError(TransientError):
    """The service's own database cannot be reached (connect refused or timed out)."""


class ShuttingDownError(ElevateError):
    """The process is stopping: a retry loop gave up waiting. Nothing was decided about
    the work in hand, so it must stay where it was (offset not committed, row unsent)."""

    retryable = True
