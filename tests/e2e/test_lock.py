"""One daemon per configuration: a second one refuses to start, and a SIGKILL frees the lock."""

from __future__ import annotations

import signal

from helpers import Workspace, daemon, finish, log_events, seen, wait_for


async def test_a_second_daemon_on_the_same_journal_refuses_to_start(ws: Workspace, qonto):
    _, url = qonto
    toml = ws.write_toml(url)
    first_log, second_log = ws.root / "first.log", ws.root / "second.log"
    first = await daemon(toml, first_log)
    try:
        await wait_for(lambda: seen(first_log, "daemon_started"), what="the first daemon")
        second = await daemon(toml, second_log)
        assert await finish(second) == 75
        (event,) = [e for e in log_events(second_log) if e["event"] == "daemon_already_running"]
        assert str(first.pid) in event["error"]
        # The holder dies without a word: the lock goes with it.
        first.send_signal(signal.SIGKILL)
        await first.wait()
        third_log = ws.root / "third.log"
        third = await daemon(toml, third_log)
        await wait_for(lambda: seen(third_log, "daemon_started"), what="a new daemon")
        ws.invoice("after.pdf")
        await wait_for(lambda: (ws.done / "after.pdf").exists(), what="after.pdf in done/")
        third.send_signal(signal.SIGTERM)
        assert await finish(third) == 0
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
