"""Directory errors: one root, `DirectoryError`, whose `retryable` tells callers what to do.

Retryable: throttling, AWS 5xx/429, and connection or timeout failures. Not retryable:
a user, account or permission set that does not exist, access denied, bad requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from elevate_core.errors import ElevateError

_T = TypeVar("_T")
A = TypeVar("A")
B = TypeVar("B")

_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ConcurrentModificationException",
    }
)


class DirectoryError(ElevateError):
    """Identity Store, Organizations or Identity Center could not answer."""

    def __init__(self, message: str, *, retryable: bool = False, code: str | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code


class UserNotFoundError(DirectoryError):
    def __init__(self, user_name: str) -> None:
        super().__init__(f"no Identity Store user named {user_name!r}", retryable=False)
        self.user_name = user_name


class AccountNotFoundError(DirectoryError):
    def __init__(self, account: str) -> None:
        super().__init__(f"no account {account!r} in the organization", retryable=False)
        self.account = account


class PermissionSetNotFoundError(DirectoryError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no permission set named {name!r}", retryable=False)
        self.name = name


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def translate_aws_error(error: Exception, what: str) -> DirectoryError:
    """Map a botocore failure onto `DirectoryError` with the right `retryable` flag."""
    if isinstance(error, DirectoryError):
        return error
    if isinstance(error, ClientError):
        code = error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = error.response.get("Error", {}).get("Message", "")
        retryable = code in _RETRYABLE_CODES or status >= 500 or status == 429
        return DirectoryError(
            f"{what}: {code or status}: {message}", retryable=retryable, code=code
        )
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return DirectoryError(f"{what}: {error}", retryable=True, code=type(error).__name__)
    if isinstance(error, BotoCoreError):
        return DirectoryError(f"{what}: {error}", retryable=False, code=type(error).__name__)
    return DirectoryError(f"{what}: {error!r}", retryable=False)


async def call_aws(what: str, fn: Callable[[], _T]) -> _T:
    """Run a blocking boto3 call in a thread; failures become `DirectoryError`."""
    try:
        return await asyncio.to_thread(fn)
    except Exception as error:
        raise translate_aws_error(error, what) from error


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Two directory reads side by side. A failure is raised once both have finished, so
    neither outlives the caller's transaction as an orphaned task."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(a, BaseException):
        raise a
    if isinstance(b, BaseException):
        raise b
    return a, b
