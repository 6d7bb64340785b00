"""What holds requests to Qonto back: the upload slots and the API's rate limits.

`Slots` is `[upload] concurrency`: requests in flight at once, shared by
every organization, and it tells the dispatchers when one is free (a partial
batch is sent at once then, and grows only while every slot is busy).
`RateLimiter` keeps the daemon under Qonto's per-IP limits (1,000 requests per
10 s, 10,000 per 10 minutes) whatever the concurrency and the server's speed:
every request to the API takes a ticket first, retries included, so the daemon
is never the one that earns a 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

# Qonto's limits per IP address, with a margin: requests are counted here when
# they leave and there when they arrive, and those instants differ a little.
_MARGIN = 0.95


@dataclass(frozen=True)
class Window:
    requests: int
    seconds: float


QONTO_LIMITS = (
    Window(int(1000 * _MARGIN), 10.0),
    Window(int(10_000 * _MARGIN), 600.0),
)


class Slots:
    """At most `n` requests at once; `free` is set while one more may start."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._sem = asyncio.Semaphore(n)
        self._busy = 0
        self.free = asyncio.Event()
        self.free.set()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._sem:
            self._busy += 1
            if self._busy >= self._n:
                self.free.clear()
            try:
                yield
            finally:
                self._busy -= 1
                self.free.set()


class RateLimiter:
    """Sliding windows over the start times of the last requests.

    A request may start when, for every window, fewer than `requests` started
    within the last `seconds`. Waiters are served in order. The clock and the
    sleep are injectable so the limits can be tested without waiting.
    """

    def __init__(
        self,
        windows: tuple[Window, ...] = QONTO_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._windows = windows
        self._clock = clock
        self._sleep = sleep
        keep = max(w.requests for w in windows)
        self._starts: deque[float] = deque(maxlen=keep)
        self._turn = asyncio.Lock()
        self.waited_s = 0.0  # in all, for the logs and the benchmarks

    def _delay_s(self, now: float, share: float) -> float:
        delay = 0.0
        for window in self._windows:
            allowed = max(1, int(window.requests * share))
            if len(self._starts) >= allowed:
                # The request that must leave the window before another starts.
                oldest = self._starts[-allowed]
                delay = max(delay, oldest + window.seconds - now)
        return delay

    async def acquire(self, share: float = 1.0) -> None:
        """Wait for a ticket. With `share` < 1 the caller stops at that share of each
        window, and waits outside the queue: work that must never slow uploads
        down (e-invoices) leaves them the rest and never stands in their way."""
        if share < 1.0:
            while (delay := self._delay_s(self._clock(), share)) > 0:
                self.waited_s += delay
                await self._sleep(delay)
            self._starts.append(self._clock())
            return
        async with self._turn:
            while (delay := self._delay_s(self._clock(), share)) > 0:
                self.waited_s += delay
                await self._sleep(delay)
            self._starts.append(self._clock())
