"""The client-side budget: rate limit and in-flight cap, revocations first.
Time is injected into the rate limiter; nothing asserts wall-clock durations."""

from __future__ import annotations

import asyncio

from botocore.exceptions import ClientError, ReadTimeoutError
from elevate_grant_worker.aws import AwsError, classify
from elevate_grant_worker.budget import ACTIVATE, RECONCILE, REVOKE, InFlightGate, RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_rate_limiter_allows_rate_per_window_then_waits() -> None:
    now = FakeTime()
    limiter = RateLimiter(3, window=1.0, now=now, shares={})
    for _ in range(3):
        await limiter.acquire()
    fourth = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not fourth.done()
    now.t += 1.0
    limiter.poke()
    await asyncio.wait_for(fourth, 5)


async def test_rate_limiter_serves_revocations_first() -> None:
    now = FakeTime()
    limiter = RateLimiter(1, window=1.0, now=now, shares={})
    await limiter.acquire()
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(name)

    tasks = [asyncio.create_task(take("activate", ACTIVATE))]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(take("revoke", REVOKE)))
    await asyncio.sleep(0.01)
    for _ in range(2):
        now.t += 1.0
        limiter.poke()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["revoke", "activate"]


async def test_sweeps_and_activations_leave_room_for_revocations() -> None:
    now = FakeTime()
    limiter = RateLimiter(10, window=1.0, now=now)  # activations 8, sweeps 5 of 10
    for _ in range(5):
        await asyncio.wait_for(limiter.acquire(RECONCILE), 1)
    sixth = asyncio.create_task(limiter.acquire(RECONCILE))
    for _ in range(3):
        await asyncio.wait_for(limiter.acquire(ACTIVATE), 1)
    for _ in range(2):  # the sweep is at its share and activations at theirs (3 + 5 = 8)
        await asyncio.wait_for(limiter.acquire(REVOKE), 1)  # a revocation goes at once
    await asyncio.sleep(0.01)
    assert not sixth.done()
    now.t += 1.0
    limiter.poke()
    await asyncio.wait_for(sixth, 5)


async def test_in_flight_gate_caps_and_prefers_revocations() -> None:
    gate = InFlightGate(2, reserved_for_revocations=0)
    peak = 0
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str, priority: int) -> None:
        nonlocal peak
        async with gate.slot(priority):
            order.append(name)
            peak = max(peak, gate.used)
            await release.wait()

    first = [asyncio.create_task(write(f"a{n}", ACTIVATE)) for n in range(2)]
    await asyncio.sleep(0.01)
    later = [
        asyncio.create_task(write("a2", ACTIVATE)),
        asyncio.create_task(write("r0", REVOKE)),
    ]
    await asyncio.sleep(0.01)
    assert order == ["a0", "a1"]
    release.set()
    await asyncio.wait_for(asyncio.gather(*first, *later), 5)
    assert order[2] == "r0"
    assert peak == 2


async def test_slow_creates_never_take_the_slots_kept_for_revocations() -> None:
    gate = InFlightGate(5)  # 2 of 5 kept for revocations
    release = asyncio.Event()
    holding: list[str] = []

    async def write(name: str, priority: int) -> None:
        async with gate.slot(priority):
            holding.append(name)
            await release.wait()

    creates = [asyncio.create_task(write(f"a{n}", ACTIVATE)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert sorted(holding) == ["a0", "a1", "a2"]  # five slow creates, three slots
    revokes = [asyncio.create_task(write(f"r{n}", REVOKE)) for n in range(2)]
    await asyncio.sleep(0.01)
    assert {"r0", "r1"} <= set(holding)  # revocations got in at once
    assert gate.used == 5
    release.set()
    await asyncio.wait_for(asyncio.gather(*creates, *revokes), 5)
    assert len(holding) == 7


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        "CreateAccountAssignment",
    )


def test_classify_errors() -> None:
    assert classify(_client_error("ThrottlingException", 400)).retryable
    assert classify(_client_error("ConflictException", 409)).retryable
    server = classify(_client_error("InternalServerException", 500))
    assert server.retryable
    assert server.ambiguous
    denied = classify(_client_error("AccessDeniedException", 403))
    assert not denied.retryable
    assert not classify(_client_error("ValidationException", 400)).retryable
    timeout = classify(ReadTimeoutError(endpoint_url="http://x"))
    assert isinstance(timeout, AwsError)
    assert timeout.retryable
    assert timeout.ambiguous
