"""Identity Center (sso-admin) client under the client-side budget (`budget.py`): a rate
limit (default 10 calls/s) and a cap on assignment writes in flight (default 5), in lanes
that serve revocations before activations before reconciliation.

boto3 is synchronous: calls run in a small thread pool of their own. botocore's own
retries are off, so one API call is one HTTP request and the budget counts exactly.
Throttling and conflicts are *waiting*, not failures: the call is made again after a
jittered backoff, in its lane, and counted on `elevate_grant_aws_waits_total` — it never
counts toward an activation's or a revocation's failures. Anything else is the caller's
decision, guided by `AwsError.retryable`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from elevate_core.errors import ElevateError
from elevate_core.lease import FencedError

from elevate_grant_worker.budget import (
    ACTIVATE,
    RECONCILE,
    REVOKE,
    InFlightGate,
    RateLimiter,
    SendPacer,
)
from elevate_grant_worker.metrics import AWS_CALLS, AWS_THROTTLES, AWS_WAIT_SECONDS, AWS_WAITS
from elevate_grant_worker.settings import GrantWorkerSettings

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

T = TypeVar("T")
__all__ = ["ACTIVATE", "RECONCILE", "REVOKE", "AwsError", "IdentityCenter", "Triple"]
# Waiting, not failing: AWS says "not now" and the call had no effect.
WAIT_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "ConflictException"})
# Budget windows are this much longer than AWS's second, so that network jitter never
# makes AWS see more than `rate` calls in one second.
JITTER_GUARD = 0.05

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

    def key(self) -> str:
        """As a wake-up payload (no part holds a `|`)."""
        return f"{self.account_id}|{self.permission_set_arn}|{self.principal_id}"

    @classmethod
    def from_key(cls, key: str) -> Triple | None:
        parts = key.split("|")
        return cls(*parts) if len(parts) == 3 and all(parts) else None


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


class IdentityCenter:
    def __init__(self, settings: GrantWorkerSettings) -> None:
        self.settings = settings
        rate = settings.aws_calls_per_second
        self.limiter = RateLimiter(rate, window=1.0 + JITTER_GUARD)
        self.gate = InFlightGate(
            settings.aws_max_in_flight_writes,
            reserved_for_revocations=settings.aws_writes_reserved_for_revocations,
        )
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
        self.client.meta.events.register("before-send", self.fence_hook)
        self.fence: Callable[[], None] | None = None
        self.calls_made = 0  # every request sent
        self.calls_by_lane: dict[int, int] = {}  # … per lane (sweeps count theirs)
        self.instance_arn = settings.sso_instance_arn or ""

    def fence_hook(self, **_kwargs: Any) -> None:
        if self.fence is not None:
            self.fence()  # raises FencedError: this worker no longer leads

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, operation: str, priority: int, fn: Callable[[], T]) -> T:
        """One API call in its lane; throttling and conflicts are waited out, in the lane."""
        loop = asyncio.get_running_loop()
        waits = 0
        while True:
            await self.limiter.acquire(priority)
            self.calls_made += 1
            self.calls_by_lane[priority] = self.calls_by_lane.get(priority, 0) + 1
            try:
                result = await loop.run_in_executor(self._pool, fn)
            except FencedError:
                raise
            except Exception as exc:
                error = classify(exc)
                AWS_CALLS.labels(operation, error.code).inc()
                if error.code not in WAIT_CODES:
                    raise error from exc
                if error.code != "ConflictException":
                    AWS_THROTTLES.labels(operation).inc()
                waits += 1
                delay = self._wait_delay(waits)
                AWS_WAITS.labels(operation, error.code).inc()
                AWS_WAIT_SECONDS.labels(operation).inc(delay)
                await asyncio.sleep(delay)
                continue
            AWS_CALLS.labels(operation, "ok").inc()
            return result

    def _wait_delay(self, waits: int) -> float:
        ceiling = min(
            self.settings.retry_max_seconds,
            self.settings.retry_base_seconds * 2 ** min(waits - 1, 20),
        )
        return random.uniform(ceiling / 2, ceiling)

    async def discover(self) -> str:
        if not self.instance_arn:
            instances = await self.call(
                "ListInstances", ACTIVATE, lambda: self.client.list_instances()["Instances"]
            )
            if not instances:
                raise AwsError(
                    "NoInstance", "no Identity Center instance", retryable=False, ambiguous=False
                )
            self.instance_arn = instances[0]["InstanceArn"]
        return self.instance_arn

    async def exists(self, triple: Triple, *, priority: int) -> bool:
        """Whether AWS lists the USER assignment — asked of the user's own assignments in
        the account, so a pair with thousands of users costs one call, not its pages."""
        arn = await self.discover()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "InstanceArn": arn,
                "PrincipalId": triple.principal_id,
                "PrincipalType": "USER",
                "Filter": {"AccountId": triple.account_id},
            }
            if token:
                kwargs["NextToken"] = token
            page = await self.call(
                "ListAccountAssignmentsForPrincipal",
                priority,
                lambda kw=kwargs: self.client.list_account_assignments_for_principal(**kw),  # type: ignore[misc]
            )
            for item in page.get("AccountAssignments", []):
                if (
                    item.get("AccountId") == triple.account_id
                    and item.get("PermissionSetArn") == triple.permission_set_arn
                ):
                    return True
            token = page.get("NextToken")
            if not token:
                return False

    async def user_assignments(
        self, account_id: str, permission_set_arn: str, *, priority: int
    ) -> set[str]:
        """The principal ids of every USER assignment of the pair (all pages)."""
        return await self.principals(account_id, permission_set_arn, "USER", priority=priority)

    async def principals(
        self, account_id: str, permission_set_arn: str, principal_type: str, *, priority: int
    ) -> set[str]:
        """The ids of every `principal_type` (USER | GROUP) assigned the pair (all pages)."""
        arn = await self.discover()
        token: str | None = None
        found: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {
                "InstanceArn": arn,
                "AccountId": account_id,
                "PermissionSetArn": permission_set_arn,
                "MaxResults": 100,  # AWS's largest page: fewer calls
            }
            if token:
                kwargs["NextToken"] = token
            page = await self.call(
                "ListAccountAssignments",
                priority,
                lambda kw=kwargs: self.client.list_account_assignments(**kw),  # type: ignore[misc]
            )
            found.update(
                str(item["PrincipalId"])
                for item in page.get("AccountAssignments", [])
                if item.get("PrincipalType") == principal_type and item.get("PrincipalId")
            )
            token = page.get("NextToken")
            if not token:
                return found

    async def provisioned_accounts(self, permission_set_arn: str, *, priority: int) -> set[str]:
        """Accounts the permission set is provisioned to (all pages): only there can it
        have assignments, so a sweep lists assignments nowhere else."""
        arn = await self.discover()
        token: str | None = None
        accounts: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {
                "InstanceArn": arn,
                "PermissionSetArn": permission_set_arn,
                "MaxResults": 100,
            }
            if token:
                kwargs["NextToken"] = token
            page = await self.call(
                "ListAccountsForProvisionedPermissionSet",
                priority,
                lambda kw=kwargs: self.client.list_accounts_for_provisioned_permission_set(**kw),  # type: ignore[misc]
            )
            accounts.update(str(a) for a in page.get("AccountIds", []))
            token = page.get("NextToken")
            if not token:
                return accounts

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
        out = await self.call(
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
            out = await self.call(
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
            out = await self.call(
                "DescribeAccountAssignmentCreationStatus",
                ACTIVATE,
                lambda: self.client.describe_account_assignment_creation_status(
                    InstanceArn=arn, AccountAssignmentCreationRequestId=request_id
                )["AccountAssignmentCreationStatus"],
            )
        else:
            out = await self.call(
                "DescribeAccountAssignmentDeletionStatus",
                REVOKE,
                lambda: self.client.describe_account_assignment_deletion_status(
                    InstanceArn=arn, AccountAssignmentDeletionRequestId=request_id
                )["AccountAssignmentDeletionStatus"],
            )
        return str(out.get("Status", "IN_PROGRESS")), out.get("FailureReason")
