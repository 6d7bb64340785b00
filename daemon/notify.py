"""systemd's notify protocol: READY, STATUS, STOPPING and the watchdog, on $NOTIFY_SOCKET.

A datagram per message to the socket systemd names (a path, or an abstract
socket when it starts with "@"). Without the variable every call is a no-op,
so the daemon runs the same under systemd, in a terminal and in tests. The
watchdog is fed from the event loop itself: a loop that is wedged stops
feeding it, and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

from .aio import wait_event


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self._address = address or None
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1_000_000 / 2  # half, as systemd advises

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        """One datagram; systemd being away must never stop the daemon."""
        if self._sock is None or self._address is None:
            return
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self._address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def feed_watchdog(self, done: asyncio.Event) -> None:
        """WATCHDOG=1 at half the interval systemd asked for, until `done` (the process ends).

        Fed through a graceful stop too: requests in flight may take the whole grace period.
        """
        interval_s = self.watchdog_interval_s
        if interval_s is None or self._sock is None:
            return
        while True:
            self.send("WATCHDOG=1")
            if await wait_event(done, interval_s):
                return

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
