"""The re-check as a service makes it: look the request's user, account and permission set
up in the directory now, then judge (`elevate_core.policy.recheck`) with the caller's own
policy copy and managed scope.

The user is read past the cache (group membership now decides). A directory that cannot
answer is `DirectoryUnavailableError` — transient, retried like any outage, never a
refusal; only "there is no such user / account / permission set" is an answer.
A refusal is reported by the caller (`report`): one error log line and
`elevate_recheck_refused_total{service,reason}`, the alert metric.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Container
from typing import Protocol, TypeVar

from prometheus_client import Counter

from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    PermissionSetNotFoundError,
    UserNotFoundError,
    both,
)
from elevate_core.directory.models import Account, PermissionSet, User
from elevate_core.errors import TransientError
from elevate_core.policy.model import Policy
from elevate_core.policy.recheck import Found, Limits, Refusal, RequestFacts, judge
from elevate_core.policy.terms import Terms

log = logging.getLogger("elevate.recheck")
T = TypeVar("T")

REFUSED = Counter(
    "elevate_recheck_refused",
    "Requests a service refused to decide or grant because they fail its re-check "
    "(a well-formed event the policy does not allow: alert)",
    ["service", "reason"],
)


class RecheckDirectory(Protocol):
    """What the re-check reads (elevate_core.directory.aws.Directory has it all)."""

    async def get_user(self, user_name: str, *, expected_id: str | None = None) -> User: ...
    async def get_account(self, account_id: str) -> Account: ...
    async def get_permission_set(self, name: str) -> PermissionSet: ...
    def invalidate_user(self, user_name: str) -> None: ...


class DirectoryUnavailableError(TransientError):
    """The directory cannot answer right now: transient, so the work waits and retries
    instead of refusing (or dead-lettering) a request that may be fine."""


async def look_up(directory: RecheckDirectory, request: RequestFacts) -> Found:
    """The request's user, account and permission set as the directory has them now: the
    user first (read fresh; without one nothing else is asked), then the other two side by
    side (they usually come from the cache)."""
    try:
        directory.invalidate_user(request.user_name)
        try:
            # The request's user id lets the read skip GetUserId when it still holds.
            user = await directory.get_user(request.user_name, expected_id=request.user_id)
        except UserNotFoundError:
            return Found(None, None, None)  # nothing else can be judged without the user
        account, permission_set = await both(
            _unless_missing(directory.get_account(request.account_id), AccountNotFoundError),
            _unless_missing(
                directory.get_permission_set(request.permission_set_name),
                PermissionSetNotFoundError,
            ),
        )
    except DirectoryError as exc:
        raise DirectoryUnavailableError(f"directory: {exc}") from exc
    return Found(user, account, permission_set)


async def _unless_missing(lookup: Awaitable[T], missing: type[DirectoryError]) -> T | None:
    try:
        return await lookup
    except missing:
        return None


async def recheck(
    request: RequestFacts,
    *,
    policy: Policy,
    directory: RecheckDirectory,
    limits: Limits,
    scope: Container[tuple[str, str]] | None = None,
) -> Terms | Refusal:
    """The request's terms under `policy` if everything holds now, else the refusal.
    Raises DirectoryUnavailableError when the directory cannot answer."""
    found = await look_up(directory, request)
    return judge(request, found, policy=policy, limits=limits, scope=scope)


def report(refusal: Refusal, *, service: str, request_id: str) -> None:
    """Count and log a refusal (once it is recorded: after the commit)."""
    REFUSED.labels(service, refusal.code.value).inc()
    log.error(
        "re-check refused request %s: %s (%s)",
        request_id,
        refusal.reason,
        refusal.code.value,
        extra={"ctx_request_id": request_id, "ctx_reason_code": refusal.code.value},
    )
