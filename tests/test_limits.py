"""The limits on requests: Qonto's rate limits by construction, and the upload slots."""

from __future__ import annotations

import asyncio

from daemon.qonto.limits import QONTO_LIMITS, RateLimiter, Slots, Window


class FakeClock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def most_in_any_window(starts: list[float], seconds: float) -> int:
    most, first = 0, 0
    for last, t in enumerate(starts):
        while t - starts[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_qonto_limits_hold_whatever_the_demand():
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def caller(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()
            starts.append(clock())

    # Far more than the limits allow, from many callers at once (a 0 ms server).
    await asyncio.gather(*(caller(1_200) for _ in range(10)))
    assert len(starts) == 12_000
    assert most_in_any_window(starts, 10.0) <= 1_000
    assert most_in_any_window(starts, 600.0) <= 10_000
    # ...and it is a limit, not a crawl: the 10-minute budget is used within the first minutes.
    assert starts[9_000] < 120.0


async def test_the_windows_are_sliding_and_waiters_go_in_turn():
    clock = FakeClock()
    limiter = RateLimiter((Window(3, 10.0), Window(5, 60.0)), clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(7):
        await limiter.acquire()
        starts.append(clock())
    # Three at once, three more when the first three leave the 10 s window, but only
    # two of those before the 60 s window is full; the seventh waits for a minute.
    assert starts == [0.0, 0.0, 0.0, 10.0, 10.0, 60.0, 60.0]
    assert limiter.waited_s > 0


def test_the_margin_stays_under_qonto_s_figures():
    assert [(w.requests, w.seconds) for w in QONTO_LIMITS] == [(950, 10.0), (9_500, 600.0)]


async def test_slots_say_when_one_is_free():
    slots = Slots(2)
    assert slots.free.is_set()
    first, second = asyncio.Event(), asyncio.Event()

    async def hold(until: asyncio.Event) -> None:
        async with slots.hold():
            await until.wait()

    tasks = [asyncio.create_task(hold(first)), asyncio.create_task(hold(second))]
    await asyncio.sleep(0)
    assert not slots.free.is_set()  # both busy: a partial batch may grow meanwhile
    first.set()
    await tasks[0]
    assert slots.free.is_set()
    second.set()
    await tasks[1]


async def test_a_reduced_share_never_stands_in_the_way_of_full_share_callers():
    clock = FakeClock()
    limiter = RateLimiter((Window(4, 10.0),), clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    await limiter.acquire()  # 2 of 4 used: the half share is spent, uploads have 2 left
    low = asyncio.create_task(limiter.acquire(share=0.5))
    await asyncio.sleep(0)
    assert not low.done()  # it waits for the window...
    before = clock()
    await limiter.acquire()  # ...and an upload does not wait behind it
    assert clock() == before
    await low


def test_an_auth_pause_ends_by_the_clock_alone():
    from daemon.flow.orgs import AuthGate

    now = [100.0]
    gate = AuthGate(initial_s=60.0, max_s=900.0, clock=lambda: now[0])
    assert gate.close() == 60.0 and gate.paused
    now[0] += 61.0  # nobody waited on it (no file to upload): e-invoices may go on
    assert not gate.paused
