"""Stand-ins that are slower than the real thing, for tests of time limits."""

from __future__ import annotations

import time

from ..parsers import warm_up


def slow_parser_start() -> int:
    """A parser process that takes 1.5 s to start (a loaded machine, a cold disk)."""
    time.sleep(1.5)
    return warm_up()
