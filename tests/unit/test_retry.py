"""The one retry policy: which failures are transient, how long it waits, how it stops."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)
from elevate_core.directory.errors import DirectoryError
from elevate_core.errors import (
    DatabaseUnavailableError,
    ElevateError,
    NotYetError,
    PermanentError,
)
from elevate_core.retry import Retrying, RetryPolicy, is_transient
from sqlalchemy import exc as sa_exc


def _sa_operational(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


class _PgError(Exception):
    """What SQLAlchemy's asyncpg adapter wraps: an error carrying a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _sa_pg(sqlstate: str) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("UPDATE t", {}, _PgError(sqlstate))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (DatabaseUnavailableError("refused"), True),
        (_sa_pg("40P01"), True),  # deadlock detected
        (_sa_pg("40001"), True),  # serialization failure
        (_sa_pg("57P01"), True),  # admin shutdown (a restart)
        (_sa_pg("08006"), True),  # connection failure
        (_sa_pg("23505"), False),  # unique violation: the data is wrong
        (_sa_pg("42P01"), False),  # undefined table: a bug
        (_sa_operational("database is locked"), True),
        (_sa_operational("no such table: grants"), False),
        (sa_exc.TimeoutError("pool exhausted"), True),
        (KafkaConnectionError(), True),
        (NotLeaderForPartitionError(), True),
        (TopicAuthorizationFailedError(), False),
        (MessageSizeTooLargeError(), False),
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (FileNotFoundError("policy.yaml"), False),
        (PermissionError("nope"), False),
        (TimeoutError(), False),
        (OSError("unrelated"), False),
        (KeyError("bug"), False),
        (DirectoryError("throttled", retryable=True), True),
        (DirectoryError("no such user", retryable=False), False),
        (PermanentError("refused"), False),
        (ElevateError("plain"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_transient_or_permanent(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
    decision = RetryPolicy().decide(error, attempt=1)
    assert decision.retry is transient
    assert type(error).__name__ in decision.reason


def test_backoff_grows_and_is_bounded() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    error = DatabaseUnavailableError("down")
    first = [policy.decide(error, attempt=1).delay for _ in range(50)]
    late = [policy.decide(error, attempt=40).delay for _ in range(50)]
    assert all(0.25 <= d <= 0.5 for d in first)
    assert all(4.0 <= d <= 8.0 for d in late)


def test_an_errors_own_retry_after_is_honoured() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    error = ElevateError("throttled", retryable=True, retry_after=30.0)
    assert policy.decide(error, attempt=1).delay == pytest.approx(30.0)


async def test_wait_returns_at_once_when_stopping() -> None:
    policy = RetryPolicy(base_delay=60, max_delay=60)
    stopping = asyncio.Event()
    decision = policy.decide(DatabaseUnavailableError("down"), attempt=1)
    waiter = asyncio.create_task(policy.wait(decision, stopping))
    await asyncio.sleep(0)
    stopping.set()
    assert await asyncio.wait_for(waiter, 5) is False  # not the 30-60 s of the backoff


async def test_loop_failures_are_always_waited_out() -> None:
    retrying = Retrying(RetryPolicy(base_delay=0.1, max_delay=0.2), component="t", what="loop")
    decision = retrying.failed_outside_work(KeyError("bug in the loop"))
    assert decision.retry
    assert 0.05 <= decision.delay <= 0.2


def test_a_wait_for_something_that_may_never_come_is_bounded_by_time() -> None:
    policy = RetryPolicy()
    error = NotYetError("activity for a request not seen yet")
    assert policy.decide(error, attempt=50, elapsed=10.0).retry
    late = policy.decide(error, attempt=51, elapsed=301.0)
    assert not late.retry
    assert "gave up after" in late.reason
