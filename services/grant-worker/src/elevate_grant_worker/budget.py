"""The client-side AWS budget of ARCHITECTURE.md §3, in lanes: revocations, then
activations, then reconciliation (lower number first).

- `RateLimiter`: at most `rate` calls in any window, highest lane first.
- `InFlightGate`: asynchronous assignment writes outstanding at AWS (from the write call
  until its status is final) — AWS allows 10 to 15 per instance, shared with every other
  tool. Part of it is reserved for revocations, so slow creates can never hold every slot:
  activations may use `limit - reserved_for_revocations`, revocations all of it.
- `SendPacer`: the last guard, on the HTTP send itself: at most `rate` requests leave in
  any window, whatever the threads do — and an idle system sends at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from elevate_grant_worker.metrics import IN_FLIGHT_WRITES

REVOKE = 0  # lanes: revocations first
ACTIVATE = 1
RECONCILE = 2


class _Waiters:
    """Waiters per lane, first come first served within a lane; `dispatch` lets through, in
    lane order, every head waiter that `can_go` allows. O(lanes) per decision, and only the
    waiters let through are woken."""

    def __init__(self) -> None:
        self.lanes: dict[int, deque[asyncio.Future[None]]] = {}

    def any_before(self, lane: int) -> bool:
        return any(q for other, q in self.lanes.items() if other <= lane)

    def add(self, lane: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lanes.setdefault(lane, deque()).append(future)
        return future

    def discard(self, lane: int, future: asyncio.Future[None]) -> None:
        with suppress(ValueError):
            self.lanes.get(lane, deque()).remove(future)

    def dispatch(self, can_go: Callable[[int], bool], take: Callable[[int], None]) -> None:
        for lane in sorted(self.lanes):
            queue = self.lanes[lane]
            while queue and can_go(lane):
                future = queue.popleft()
                if future.done():  # cancelled while waiting
                    continue
                take(lane)
                future.set_result(None)


# The share of the rate other lanes may use in a window: what activations and sweeps leave
# unused is always there for a revocation, so neither a sweep nor a wave of activations
# makes a revocation wait for the window to turn.
SHARED_CAP = 0.8  # activations and reconciliation together
LANE_SHARES = {ACTIVATE: 0.8, RECONCILE: 0.5}


class RateLimiter:
    """At most `rate` acquisitions in any `window` seconds, revocations first; activations
    and reconciliation within their shares of the rate."""

    def __init__(
        self,
        rate: int,
        *,
        window: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        shares: dict[int, float] | None = None,
    ) -> None:
        self.rate = rate
        self.window = window
        self._now = now
        self._sent: deque[tuple[float, int]] = deque()
        self._per_lane: dict[int, deque[float]] = {}
        shares = LANE_SHARES if shares is None else shares
        self._caps = {lane: max(1, int(rate * share)) for lane, share in shares.items()}
        self._shared_cap = max(1, int(rate * SHARED_CAP)) if shares else rate
        self._waiters = _Waiters()
        self._timer: asyncio.TimerHandle | None = None

    def _prune(self, now: float) -> None:
        while self._sent and self._sent[0][0] + self.window <= now:
            _t, lane = self._sent.popleft()
            self._per_lane[lane].popleft()

    def _delay(self, lane: int) -> float:
        """Seconds until a call of this lane may go (0: now)."""
        now = self._now()
        self._prune(now)
        waits = [0.0]
        if len(self._sent) >= self.rate:
            waits.append(self._sent[0][0] + self.window - now)
        if lane != REVOKE:
            others = [t for t, other in self._sent if other != REVOKE]
            if len(others) >= self._shared_cap:
                waits.append(others[len(others) - self._shared_cap] + self.window - now)
            mine = self._per_lane.get(lane, deque())
            cap = self._caps.get(lane, self.rate)
            if len(mine) >= cap:
                waits.append(mine[len(mine) - cap] + self.window - now)
        return max(waits)

    def _take(self, lane: int) -> None:
        at = self._now()
        self._sent.append((at, lane))
        self._per_lane.setdefault(lane, deque()).append(at)

    def _dispatch(self) -> None:
        self._timer = None
        self._waiters.dispatch(lambda lane: self._delay(lane) <= 0, self._take)
        pending = [lane for lane, q in self._waiters.lanes.items() if q]
        if pending:
            delay = min(self._delay(lane) for lane in pending)
            self._timer = asyncio.get_running_loop().call_later(max(delay, 0.001), self._dispatch)

    async def acquire(self, priority: int = ACTIVATE) -> None:
        if not self._waiters.any_before(priority) and self._delay(priority) <= 0:
            self._take(priority)
            return
        future = self._waiters.add(priority)
        if self._timer is None:
            self._dispatch()
        try:
            await future
        except BaseException:
            self._waiters.discard(priority, future)
            raise

    def poke(self) -> None:
        """Look again now (tests move the injected clock)."""
        if self._timer is not None:
            self._timer.cancel()
        self._dispatch()


class InFlightGate:
    """Outstanding assignment writes: `limit` in all, `reserved` of them for revocations."""

    def __init__(self, limit: int, *, reserved_for_revocations: int | None = None) -> None:
        self.limit = limit
        default = max(1, (2 * limit) // 5) if limit > 1 else 0
        self.reserved = default if reserved_for_revocations is None else reserved_for_revocations
        self.used = 0
        self.used_by_others = 0  # writes outside the revocation lane
        self._waiters = _Waiters()

    def _fits(self, priority: int) -> bool:
        if self.used >= self.limit:
            return False
        return priority == REVOKE or self.used_by_others < self.limit - self.reserved

    def _take(self, priority: int) -> None:
        self.used += 1
        self.used_by_others += priority != REVOKE
        IN_FLIGHT_WRITES.set(self.used)

    @asynccontextmanager
    async def slot(self, priority: int = ACTIVATE) -> AsyncIterator[None]:
        if not self._waiters.any_before(priority) and self._fits(priority):
            self._take(priority)
        else:
            future = self._waiters.add(priority)
            try:
                await future
            except BaseException:
                self._waiters.discard(priority, future)
                if future.done() and not future.cancelled():
                    self._release(priority)  # granted as we were cancelled: give it back
                raise
        try:
            yield
        finally:
            self._release(priority)

    def _release(self, priority: int) -> None:
        self.used -= 1
        self.used_by_others -= priority != REVOKE
        IN_FLIGHT_WRITES.set(self.used)
        self._waiters.dispatch(self._fits, self._take)


class SendPacer:
    """The last line of the budget, on the HTTP send itself (botocore `before-send`): at
    most `rate` requests leave in any `window` seconds, counted by the time they actually
    leave (after any queueing in threads). The window is a little longer than AWS's second
    (`JITTER_GUARD`), so network jitter never lets AWS see more than `rate` in one second.
    No spacing below the rate: an idle system calls AWS at once."""

    def __init__(self, rate: int, window: float) -> None:
        self.rate = rate
        self.window = window
        self._sent: deque[float] = deque(maxlen=rate)
        self._lock = threading.Lock()

    def __call__(self, **_kwargs: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._sent) == self.rate and self._sent[0] + self.window > now:
                time.sleep(self._sent[0] + self.window - now)
                now = time.monotonic()
            self._sent.append(now)
