"""Identity Center (sso-admin) client with the client-side budget of ARCHITECTURE.md §3:
a rate limit (default 10 calls/s) and a cap on assignment writes in flight (default 5),
both serving revocations before activations (lower priority number first).

boto3 is synchronous: calls run in a small thread pool of their own. botocore's own
retries are off, so one API call is one HTTP request and the budget counts exactly;
retrying is the caller's decision, guided by `AwsError.retryable`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from elevate_core.errors import ElevateError
from elevate_core.lease import FencedError

from elevate_grant_worker.metrics import AWS_CALLS, AWS_THROTTLES, IN_FLIGHT_WRITES
from elevate_grant_worker.settings import GrantWorkerSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mypy_boto3_sso_admin import SSOAdminClient

T = TypeVar("T")
REVOKE = 0  # priorities: revocations first
ACTIVATE = 1
# Send times keep this much under the budget so that network jitter never makes AWS see
# more than `rate` calls in one second.
JITTER_GUARD = 0.25

_RETRYABLE_CODES = {
    "ThrottlingException",
    "TooManyRequestsException",
    "ConflictException",
    "InternalServerException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
}


@dataclass(frozen=True, slots=True)
class Triple:
    account_id: str
    permission_set_arn: str
    principal_id: str


class AwsError(ElevateError):
    """An Identity Center call failed. `retryable`: throttling, conflict, 5xx, timeouts.
    `ambiguous`: the write may have happened (timeouts, 5xx): check before redoing it."""

    def __init__(self, code: str, message: str, *, retryable: bool, ambiguous: bool) -> None:
        super().__init__(f"{code}: {message}", retryable=retryable)
        self.code = code
        self.message = message
        self.ambiguous = ambiguous


def classify(exc: Exception) -> AwsError:
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        server = status >= 500
        return AwsError(
            code,
            str(error.get("Message", "")),
            retryable=code in _RETRYABLE_CODES or server,
            ambiguous=server,
        )
    if isinstance(exc, ConnectionError | HTTPClientError | BotoCoreError | OSError):
        return AwsError(type(exc).__name__, str(exc), retryable=True, ambiguous=True)
    return AwsError(type(exc).__name__, str(exc), retryable=False, ambiguous=False)


class _PriorityQueue:
    """Waiters in (priority, arrival) order on one asyncio.Condition."""

    def __init__(self) -> None:
        self.cond = asyncio.Condition()
        self.queue: list[tuple[int, int]] = []
        self._seq = itertools.count()

    def enter(self, priority: int) -> tuple[int, int]:
        entry = (priority, next(self._seq))
        heapq.heappush(self.queue, entry)
        return entry

    def leave(self, entry: tuple[int, int]) -> None:
        if entry in self.queue:
            self.queue.remove(entry)
            heapq.heapify(self.queue)


class RateLimiter:
    """At most `rate` acquisitions in any `window` seconds, highest priority first."""

    def __init__(
        self, rate: int, *, window: float = 1.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.window = window
        self._now = now
        self._times: deque[float] = deque(maxlen=rate)
        self._q = _PriorityQueue()

    def _delay(self) -> float:
        if len(self._times) < self.rate:
            return 0.0
        return self._times[0] + self.window - self._now()

    async def acquire(self, priority: int = ACTIVATE) -> None:
        async with self._q.cond:
            entry = self._q.enter(priority)
            self._q.cond.notify_all()
            try:
                while True:
                    if self._q.queue[0] == entry:
                        delay = self._delay()
                        if delay <= 0:
                            heapq.heappop(self._q.queue)
                            self._times.append(self._now())
                            self._q.cond.notify_all()
                            return
                        with suppress(TimeoutError):
                            await asyncio.wait_for(self._q.cond.wait(), delay)
                    else:
                        await self._q.cond.wait()
            except BaseException:
                self._q.leave(entry)
                self._q.cond.notify_all()
                raise


class InFlightGate:
    """A semaphore of `limit` slots for assignment writes, highest priority first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._q = _PriorityQueue()

    @asynccontextmanager
    async def slot(self, priority: int = ACTIVATE) -> AsyncIterator[None]:
        async with self._q.cond:
            entry = self._q.enter(priority)
            try:
                await self._q.cond.wait_for(
                    lambda: self._q.queue[0] == entry and self.used < self.limit
                )
            except BaseException:
                self._q.leave(entry)
                self._q.cond.notify_all()
                raise
            heapq.heappop(self._q.queue)
            self.used += 1
            IN_FLIGHT_WRITES.set(self.used)
            self._q.cond.notify_all()
        try:
            yield
        finally:
            async with self._q.cond:
                self.used -= 1
                IN_FLIGHT_WRITES.set(self.used)
                self._q.cond.notify_all()


class SendPacer:
    """The last line of the budget, on the HTTP send itself (botocore `before-send`):
    requests leave evenly spaced, `window / rate` seconds apart, whatever the threads do.
    Even spacing (not bursts of `rate`) keeps what AWS observes under the budget even
    when scheduling delays shift some requests against others."""

    def __init__(self, rate: int, window: float) -> None:
        self.interval = window / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def __call__(self, **_kwargs: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if self._next > now:
                time.sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


class IdentityCenter:
    def __init__(self, settings: GrantWorkerSettings) -> None:
        self.settings = settings
        rate = settings.aws_calls_per_second
        self.limiter = RateLimiter(rate, window=1.0 + JITTER_GUARD)
        self.gate = InFlightGate(settings.aws_max_in_flight_writes)
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="aws")
        session = boto3.session.Session(
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
        )
        self.client: SSOAdminClient = session.client(
            "sso-admin",
            endpoint_url=settings.aws_endpoint_url,
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=settings.aws_timeout_seconds,
                read_timeout=settings.aws_timeout_seconds,
                max_pool_connections=20,
            ),
        )
        self.client.meta.events.register("before-send", SendPacer(rate, 1.0 + JITTER_GUARD))
        # Last, right before the request leaves (after any pacing wait): fencing.
        self.client.meta.events.register("before-send", self._fence_hook)
        self.fence: Callable[[], None] | None = None
        self.instance_arn = settings.sso_instance_arn or ""

    def _fence_hook(self, **_kwargs: Any) -> None:
        if self.fence is not None:
            self.fence()  # raises FencedError: this worker no longer leads

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, operation: str, priority: int, fn: Callable[[], T]) -> T:
        await self.limiter.acquire(priority)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, fn)
        except FencedError:
            raise
        except Exception as exc:
            error = classify(exc)
            AWS_CALLS.labels(operation, error.code).inc()
            if "Throttl" in error.code or error.code == "TooManyRequestsException":
                AWS_THROTTLES.labels(operation).inc()
            raise error from exc
        AWS_CALLS.labels(operation, "ok").inc()
        return result

    async def discover(self) -> str:
        if not self.instance_arn:
            instances = await self._call(
                "ListInstances", ACTIVATE, lambda: self.client.list_instances()["Instances"]
            )
            if not instances:
                raise AwsError(
                    "NoInstance", "no Identity Center instance", retryable=False, ambiguous=False
                )
            self.instance_arn = instances[0]["InstanceArn"]
        return self.instance_arn

    async def exists(self, triple: Triple, *, priority: int) -> bool:
        """Whether AWS lists the USER assignment (all pages)."""
        users = await self.user_assignments(
            triple.account_id, triple.permission_set_arn, priority=priority
        )
        return triple.principal_id in users

    async def user_assignments(
        self, account_id: str, permission_set_arn: str, *, priority: int
    ) -> set[str]:
        """The principal ids of every USER assignment of the pair (all pages)."""
        arn = await self.discover()
        token: str | None = None
        users: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {
                "InstanceArn": arn,
                "AccountId": account_id,
                "PermissionSetArn": permission_set_arn,
            }
            if token:
                kwargs["NextToken"] = token
            page = await self._call(
                "ListAccountAssignments",
                priority,
                lambda kw=kwargs: self.client.list_account_assignments(**kw),  # type: ignore[misc]
            )
            users.update(
                str(item["PrincipalId"])
                for item in page.get("AccountAssignments", [])
                if item.get("PrincipalType") == "USER" and item.get("PrincipalId")
            )
            token = page.get("NextToken")
            if not token:
                return users

    def _target(self, triple: Triple) -> dict[str, Any]:
        return {
            "InstanceArn": self.instance_arn,
            "TargetId": triple.account_id,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": triple.permission_set_arn,
            "PrincipalType": "USER",
            "PrincipalId": triple.principal_id,
        }

    async def create(self, triple: Triple) -> str:
        """Submit CreateAccountAssignment; returns AWS's request id."""
        await self.discover()
        kwargs = self._target(triple)
        out = await self._call(
            "CreateAccountAssignment",
            ACTIVATE,
            lambda: self.client.create_account_assignment(**kwargs),
        )
        return str(out["AccountAssignmentCreationStatus"].get("RequestId", ""))

    async def delete(self, triple: Triple) -> str | None:
        """Submit DeleteAccountAssignment; None when the assignment does not exist."""
        await self.discover()
        kwargs = self._target(triple)
        try:
            out = await self._call(
                "DeleteAccountAssignment",
                REVOKE,
                lambda: self.client.delete_account_assignment(**kwargs),
            )
        except AwsError as exc:
            if exc.code == "ResourceNotFoundException":
                return None  # not found counts as done
            raise
        return str(out["AccountAssignmentDeletionStatus"].get("RequestId", ""))

    async def status(self, kind: str, request_id: str) -> tuple[str, str | None]:
        """(IN_PROGRESS | FAILED | SUCCEEDED, failure reason) of a write."""
        arn = await self.discover()
        if kind == "create":
            out = await self._call(
                "DescribeAccountAssignmentCreationStatus",
                ACTIVATE,
                lambda: self.client.describe_account_assignment_creation_status(
                    InstanceArn=arn, AccountAssignmentCreationRequestId=request_id
                )["AccountAssignmentCreationStatus"],
            )
        else:
            out = await self._call(
                "DescribeAccountAssignmentDeletionStatus",
                REVOKE,
                lambda: self.client.describe_account_assignment_deletion_status(
                    InstanceArn=arn, AccountAssignmentDeletionRequestId=request_id
                )["AccountAssignmentDeletionStatus"],
            )
        return str(out.get("Status", "IN_PROGRESS")), out.get("FailureReason")
