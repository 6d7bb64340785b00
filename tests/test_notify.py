"""systemd's notify protocol on a real datagram socket: READY, STATUS, STOPPING, WATCHDOG."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from helpers import wait_for

from daemon.notify import Notifier


class Listener:
    """Plays systemd: a datagram socket that records every message with its arrival time."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in list(self.messages) for line in m.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    sock = Listener(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


async def test_messages_reach_the_socket(tmp_path, listener):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    notifier.ready("0 waiting")
    notifier.status("3 waiting, 1 uploading")
    notifier.stopping()
    await wait_for(lambda: "STOPPING=1" in listener.lines(), what="three messages")
    assert listener.lines() == ["READY=1", "STATUS=0 waiting", "STATUS=3 waiting, 1 uploading",
                                "STOPPING=1", "STATUS=stopping"]
    notifier.close()


async def test_an_abstract_socket_is_understood():
    name = f"qid-test-{time.monotonic_ns()}"
    sock = Listener("\0" + name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        await wait_for(lambda: "READY=1" in sock.lines(), what="READY on the abstract socket")
        notifier.close()
    finally:
        sock.close()


def test_without_the_variable_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    notifier.ready("x")  # a no-op, not an error


def test_a_watchdog_meant_for_another_process_is_ignored():
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    ours = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"})
    assert other.watchdog_interval_s is None and ours.watchdog_interval_s == 0.5
    other.close()
    ours.close()


async def test_the_watchdog_stops_while_the_loop_is_blocked(tmp_path, listener):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                         "WATCHDOG_USEC": "200000"})  # a ping every 0.1 s
    done = asyncio.Event()
    feeding = asyncio.ensure_future(notifier.feed_watchdog(done))
    await wait_for(lambda: listener.lines().count("WATCHDOG=1") >= 3, what="a few pings")
    blocked_at = time.monotonic()
    time.sleep(0.8)  # noqa: ASYNC251 -- a wedged event loop, on purpose
    unblocked_at = time.monotonic()
    await wait_for(
        lambda: any(t > unblocked_at for t, m in listener.messages if m == "WATCHDOG=1"),
        what="pings again once the loop runs",
    )
    pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
    assert not [t for t in pings if blocked_at + 0.05 < t < unblocked_at]
    done.set()
    await asyncio.wait_for(feeding, 5)
    notifier.close()


async def test_the_service_says_ready_status_and_stopping(ws, qonto, start, listener,
                                                          monkeypatch, tmp_path):
    _, url = qonto
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    ws.invoice("a.pdf")
    running = await start(ws.config(url))
    await wait_for(lambda: "READY=1" in listener.lines(), what="READY=1")
    ready = next(m for _, m in listener.messages if m.startswith("READY=1"))
    assert "STATUS=" in ready and "waiting" in ready
    await wait_for(lambda: listener.lines().count("WATCHDOG=1") >= 2, what="watchdog pings")
    await wait_for(lambda: (ws.done / "a.pdf").exists(), what="a.pdf in done/")
    assert await running.stop() == 0
    assert "STOPPING=1" in listener.lines()
