"""The one retry policy (the Ack/Nack/Reject idea of FastStream).

Every component that can fail and try again — consumers, timers, the outbox relay, the
workers — asks `RetryPolicy.decide(error, attempt)`:

- **transient** (`retry=True`): our database is unavailable, a deadlock or serialisation
  failure, the broker is away, AWS throttles, or any `ElevateError` marked retryable. The
  work is retried with full-jitter exponential backoff; each wait is bounded (`max_delay`)
  and honours the error's own `retry_after` hint. Retries go on until the work succeeds or
  the process stops: dead-lettering a revoke because PostgreSQL restarted would lose it.
- **permanent** (`retry=False`): anything else — bad data, a refusal, a bug, an unrelated
  `OSError` such as `FileNotFoundError`. It is dead-lettered (or the timer / row is moved
  aside) at once, with the reason.

`wait()` sleeps for a decision's delay but returns early when the component is stopping,
so shutdown never waits out a backoff. Work that has been retrying for longer than
`stuck_after` is reported (metric + error log) so an operator sees a stalled partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from prometheus_client import Counter
from sqlalchemy import exc as sa_exc

from elevate_core.errors import ElevateError

log = logging.getLogger(__name__)

RETRIES = Counter(
    "elevate_retries_total", "Transient failures retried, by component", ["component"]
)
GIVEN_UP = Counter(
    "elevate_retry_given_up_total",
    "Permanent failures handed to the dead-letter path, by component",
    ["component"],
)
STUCK = Counter(
    "elevate_retry_stuck_total",
    "Work retried for longer than the policy's stuck_after (one per stuck item)",
    ["component"],
)

# SQLSTATEs that mean "try again": serialization_failure, deadlock_detected,
# lock_not_available, admin/crash shutdown, cannot_connect_now, too many connections,
# out of memory/disk; class 08 (connection exceptions) is matched by prefix.
_TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53000", "53100", "53200", "53300"}
)
# SQLite's OperationalError covers both "busy" and "no such table": only these are transient.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (`orig`), and its causes — drivers wrap several deep."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo.extend(
            [
                orig if isinstance(orig, BaseException) else None,
                current.__cause__,
                current.__context__,
            ]
        )


def _database_transient(error: BaseException) -> bool:
    for item in _chain(error):
        state = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(state, str) and (state in _TRANSIENT_SQLSTATES or state.startswith("08")):
            return True
        if isinstance(item, sqlite3.OperationalError):
            return str(item).lower().startswith(_SQLITE_TRANSIENT)
        if type(item).__module__.startswith("asyncpg") and type(item).__name__ in {
            "ConnectionDoesNotExistError",
            "InterfaceError",  # "connection is closed" and friends
        }:
            return True
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated
    return isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError)


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same work later could succeed."""
    if isinstance(error, ElevateError):
        return error.retryable
    if isinstance(error, sa_exc.SQLAlchemyError) or any(
        isinstance(e, sqlite3.Error) for e in _chain(error)
    ):
        return _database_transient(error)
    if isinstance(error, KafkaError):
        return bool(error.retriable) or isinstance(error, KafkaConnectionError | KafkaTimeoutError)
    # Network trouble only — not every OSError (FileNotFoundError, PermissionError, …).
    return isinstance(error, ConnectionError | socket.gaierror)


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    delay: float  # seconds to wait before the next attempt (0 when not retrying)
    reason: str  # "ExcType: message", for logs and DLQ headers


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 0.2
    max_delay: float = 30.0
    stuck_after: float = 300.0  # seconds of retrying before an item is reported stuck

    def decide(self, error: BaseException, *, attempt: int, elapsed: float = 0.0) -> Decision:
        """What to do after `attempt` (1-based) failed with `error`, `elapsed` seconds
        after this item first failed."""
        reason = describe(error)
        if not is_transient(error):
            return Decision(retry=False, delay=0.0, reason=reason)
        limit = getattr(error, "give_up_after", None)
        if isinstance(limit, int | float) and elapsed >= limit:
            return Decision(
                retry=False, delay=0.0, reason=f"{reason} (gave up after {elapsed:.0f}s)"
            )
        delay = self.backoff(attempt)
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, int | float) and hint > 0:
            delay = min(max(delay, float(hint)), max(self.max_delay, float(hint)))
        return Decision(retry=True, delay=delay, reason=reason)

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(max(0, attempt - 1), 30)))
        return random.uniform(ceiling / 2, ceiling)

    async def wait(self, decision: Decision, stopping: asyncio.Event | None = None) -> bool:
        """Sleep for the decision's delay; False (at once) if `stopping` is or becomes set."""
        if stopping is None:
            await asyncio.sleep(decision.delay)
            return True
        if stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), decision.delay)
        return not stopping.is_set()


class Retrying:
    """Book-keeping for one item being retried: attempts, first failure, stuck report."""

    def __init__(self, policy: RetryPolicy, *, component: str, what: str) -> None:
        self.policy = policy
        self.component = component
        self.what = what
        self.attempt = 0
        self._first: float | None = None
        self._reported = False

    def succeeded(self) -> None:
        """The item went through: the next failure starts a fresh count."""
        self.attempt = 0
        self._first = None
        self._reported = False

    def failed(self, error: BaseException) -> Decision:
        loop = asyncio.get_running_loop()
        self.attempt += 1
        if self._first is None:
            self._first = loop.time()
        decision = self.policy.decide(
            error, attempt=self.attempt, elapsed=loop.time() - self._first
        )
        if not decision.retry:
            GIVEN_UP.labels(self.component).inc()
            return decision
        RETRIES.labels(self.component).inc()
        if not self._reported and loop.time() - self._first >= self.policy.stuck_after:
            self._reported = True
            STUCK.labels(self.component).inc()
            log.error(
                "%s: %s has been retrying for %.0fs: %s",
                self.component,
                self.what,
                loop.time() - self._first,
                decision.reason,
            )
        return decision

    def failed_outside_work(self, error: BaseException) -> Decision:
        """A failure of the loop itself (connecting, polling, leading), not of one piece of
        work: nothing can be dead-lettered, so it is waited out whatever its class."""
        decision = self.failed(error)
        if decision.retry:
            return decision
        return Decision(retry=True, delay=self.policy.backoff(self.attempt), reason=decision.reason)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


DEFAULT_POLICY = RetryPolicy()
