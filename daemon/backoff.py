"""How long to wait before trying again. Pure functions; the caller sleeps."""

from __future__ import annotations

import random

RETRY_AFTER_CAP_S = 3600.0  # a Retry-After of days is a server bug, not a plan


def next_delay(
    attempt: int,
    retry_after_s: float | None,
    rng: random.Random,
    *,
    initial_s: float,
    max_s: float,
) -> float:
    """Exponential backoff with full jitter, never shorter than the server asked.

    `attempt` counts from 0 for the first retry.
    """
    ceiling = min(max_s, initial_s * 2.0 ** min(attempt, 62))
    delay: float = rng.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
    return delay


def auth_pause(consecutive: int, *, initial_s: float, max_s: float) -> float:
    """The pause after the n-th authentication failure in a row (counting from 0).

    No jitter: one organization, one clock; it only has to grow and stay far
    below Qonto's limit of 200 answers of 401 an hour.
    """
    return float(min(max_s, initial_s * 2.0 ** min(consecutive, 62)))
