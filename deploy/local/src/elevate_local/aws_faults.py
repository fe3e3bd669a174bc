"""The fault proxy's vocabulary: injectable faults, recorded calls and held calls."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

Fault = Literal["throttle", "conflict", "http500", "denied", "latency", "in_progress", "failed"]

WRITES = {"CreateAccountAssignment": "create", "DeleteAccountAssignment": "delete"}
STATUS = {
    "DescribeAccountAssignmentCreationStatus": ("create", "AccountAssignmentCreationStatus"),
    "DescribeAccountAssignmentDeletionStatus": ("delete", "AccountAssignmentDeletionStatus"),
}
_STATUS_REQUEST_ID = {
    "DescribeAccountAssignmentCreationStatus": "AccountAssignmentCreationRequestId",
    "DescribeAccountAssignmentDeletionStatus": "AccountAssignmentDeletionRequestId",
}
_ERRORS: dict[str, tuple[int, str, str]] = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "conflict": (409, "ConflictException", "An operation is in progress for this assignment"),
    "http500": (500, "InternalServerException", "Internal failure (injected)"),
    # The caller's IAM role lacks the permission: permanent until an operator fixes it.
    "denied": (400, "AccessDeniedException", "Not authorized to perform this action (injected)"),
}


@dataclass
class FaultRule:
    """Inject `fault` into calls of `operations` (all when empty) with probability `rate`.

    `in_progress` answers IN_PROGRESS to the first `polls` status polls of each request;
    `failed` answers FAILED (and undoes the write); `latency` sleeps `seconds` first.
    `limit` caps how many times the rule fires (None: unlimited).
    """

    fault: Fault
    operations: frozenset[str] = frozenset()
    rate: float = 1.0
    polls: int = 1
    seconds: float = 0.0
    limit: int | None = None
    reason: str = "Injected failure: the permission set could not be provisioned"
    fired: int = 0

    def applies(self, operation: str) -> bool:
        if self.limit is not None and self.fired >= self.limit:
            return False
        return not self.operations or operation in self.operations


@dataclass(frozen=True)
class Call:
    operation: str
    # "ok", a fault ("throttle", "denied", "in_progress", …), or "error:<code>" from moto
    outcome: str
    at: float  # arrival, time.monotonic()
    params: dict[str, Any] = field(default_factory=dict)  # the request's JSON body
    answered: float = 0.0  # when the answer left, time.monotonic()


class Hold:
    """One held call: `reached` is set when it arrives (and is parked), `release()` lets it
    go on. With `after=True` it is parked after moto acted, before the answer is sent."""

    def __init__(self, operation: str, *, after: bool, match: dict[str, Any] | None) -> None:
        self.operation = operation
        self.after = after
        self.match = match or {}
        self.reached = threading.Event()
        self._go = threading.Event()
        self.call_params: dict[str, Any] = {}

    def takes(self, operation: str, params: dict[str, Any]) -> bool:
        if self.reached.is_set() or operation != self.operation:
            return False
        return all(params.get(k) == v for k, v in self.match.items())

    def park(self, params: dict[str, Any]) -> None:
        self.call_params = params
        self.reached.set()
        self._go.wait(timeout=600)

    def release(self) -> None:
        self._go.set()

    def wait_reached(self, timeout: float = 60.0) -> None:
        if not self.reached.wait(timeout):
            raise TimeoutError(f"no {self.operation} call arrived to hold")
