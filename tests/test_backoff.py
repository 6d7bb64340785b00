"""Backoff and auth pauses: pure functions with a seeded random source."""

from __future__ import annotations

import random

from daemon.backoff import auth_pause, next_delay
from daemon.qonto.classify import parse_retry_after


def test_full_jitter_stays_under_a_growing_ceiling():
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(300.0, 1.0 * 2**attempt)
        delays = [next_delay(attempt, None, rng, initial_s=1.0, max_s=300.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # it really spreads


def test_retry_after_is_a_floor():
    rng = random.Random(2)
    for attempt in range(5):
        assert next_delay(attempt, 42.0, rng, initial_s=1.0, max_s=300.0) >= 42.0


def test_absurd_retry_after_is_capped():
    assert next_delay(0, 10**9, random.Random(3), initial_s=1.0, max_s=300.0) <= 3600.0


def test_auth_pause_grows_to_its_cap_and_stays_far_below_qontos_limit():
    pauses = [auth_pause(n, initial_s=60.0, max_s=900.0) for n in range(10)]
    assert pauses[:5] == [60.0, 120.0, 240.0, 480.0, 900.0]
    assert pauses[-1] == 900.0
    # Even with two requests per pause, the first hour stays far below 200 answers of 401.
    elapsed, answers = 0.0, 0
    for pause in pauses:
        if elapsed > 3600:
            break
        answers += 2
        elapsed += pause
    assert answers < 20


def test_retry_after_header_forms():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 25 Nov 2026 10:00:00 GMT", now_s=1795600800.0 - 60) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
