"""What each signal means to the daemon.

SIGTERM and SIGINT stop it (a second one stops it at once). SIGHUP rescans
every inbox now, SIGUSR1 logs what the daemon is doing, SIGUSR2 turns debug
lines on, and off again. Left to their default, SIGHUP, SIGUSR1 and SIGUSR2 would end the
process silently, and systemd counts a death by SIGHUP as a clean exit, so
`Restart=on-failure` would not bring the daemon back.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import structlog

from . import logs

log = structlog.get_logger()

STOP = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def handled(actions: Mapping[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """Route each signal to its action in the running loop (SIGUSR2: debug lines)."""
    loop = asyncio.get_running_loop()
    routes = dict(actions)
    routes.setdefault(signal.SIGUSR2, _toggle_debug)
    for sig, action in routes.items():
        loop.add_signal_handler(sig, action)
    try:
        yield
    finally:
        for sig in routes:
            loop.remove_signal_handler(sig)


def _toggle_debug() -> None:
    level = logs.toggle_debug()
    # Said at warning level: whatever the level now, the change shows.
    log.warning("log_level_changed", signal="SIGUSR2", to_level=level,
                hint="send SIGUSR2 again to switch back")
