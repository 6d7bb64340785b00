"""Signals as systemd and people send them, to the real daemon process."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sqlite3
from pathlib import Path

from helpers import LOGIN, Workspace, daemon, finish, log_events, seen, wait_for

from daemon.journal import Journal


async def test_hup_rescans_usr1_reports_usr2_toggles_debug_lines(ws: Workspace, qonto):
    _, url = qonto
    # Nothing but a rescan would see a new file: no inotify, an hour between polls and scans.
    toml = ws.write_toml(url, watch={"force_polling": True, "poll_delay_ms": 3_600_000,
                                     "rescan_seconds": 3600.0})
    log = ws.root / "daemon.log"
    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: seen(log, "daemon_started"), what="daemon_started")
        ws.invoice("after-start.pdf")
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            proc.send_signal(sig)
        await wait_for(lambda: (ws.done / "after-start.pdf").exists(), what="pickup after HUP")
        await wait_for(lambda: seen(log, "daemon_status") and seen(log, "log_level_changed"),
                       what="status and level lines")
        assert proc.returncode is None  # none of them ended the daemon
        assert [e["to_level"] for e in log_events(log) if e["event"] == "log_level_changed"] == [
            "debug"]
        ws.invoice("debug.pdf")  # debug lines show now...
        proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: seen(log, "file_parsing"), what="a debug line")
        proc.send_signal(signal.SIGUSR2)  # ...and stop again
        await wait_for(lambda: len([e for e in log_events(log)
                                    if e["event"] == "log_level_changed"]) == 2,
                       what="the level back")
        assert [e["to_level"] for e in log_events(log) if e["event"] == "log_level_changed"] == [
            "debug", "info"]
        proc.send_signal(signal.SIGTERM)
        assert await finish(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    status = next(e for e in log_events(log) if e["event"] == "daemon_status")
    assert status["waiting"] == {LOGIN: 0} and "settling" in status
    assert seen(log, "rescan_requested")


async def long_reconciliation(ws: Workspace, rows: int = 300, size: int = 128 * 1024) -> None:
    """A journal whose start-up reconciliation hashes a big done/ folder for every row."""
    ws.done.mkdir(parents=True)
    imported = {}
    for i in range(rows):
        data = i.to_bytes(4, "big") * (size // 4)
        (ws.done / f"x-{i + 1}.pdf").write_bytes(data)
        imported[hashlib.sha256(data).hexdigest()] = f"id-{i}"
    journal = await Journal.open(ws.db)
    try:
        for sha in imported:
            await journal.enqueue(LOGIN, sha, ws.inbox / "x.pdf", "x.pdf", size)
        await journal.record_imported(LOGIN, imported)
    finally:
        await journal.close()


def imported_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM invoices WHERE state = 'imported'").fetchone()[0]
    finally:
        conn.close()


async def test_start_up_reconciliation_honours_sigterm(ws: Workspace, qonto):
    _, url = qonto
    await long_reconciliation(ws)
    log = ws.root / "daemon.log"
    proc = await daemon(ws.write_toml(url), log)
    await wait_for(lambda: seen(log, "daemon_started"), what="daemon_started")
    proc.send_signal(signal.SIGTERM)
    assert await finish(proc) == 0
    assert imported_rows(ws.db) > 100  # it stopped long before reconciling every row
    assert log_events(log)[-1]["event"] == "daemon_stopped"


async def test_a_second_stop_request_ends_start_up_at_once(
    ws: Workspace, qonto, start, _logs, monkeypatch
):
    """Whatever start-up is blocked on, the second request ends it without waiting."""
    import threading

    from daemon import leftovers

    _, url = qonto
    release = threading.Event()
    entered = threading.Event()

    def stuck(directory: Path) -> int:  # a start-up step stuck on a hung share
        entered.set()
        release.wait(60)
        return 0

    monkeypatch.setattr(leftovers, "clean_temporaries", stuck)
    running = await start(ws.config(url))
    try:
        await wait_for(entered.is_set, what="start-up to block")
        running.service.request_stop("SIGTERM")
        running.service.request_stop("SIGTERM")
        assert await asyncio.wait_for(asyncio.shield(running.task), 10) == 0
        assert not release.is_set()  # it ended while the step was still blocked
    finally:
        release.set()
    stopping = [e for e in _logs if e["event"] == "daemon_stopping"]
    assert [e.get("forced", False) for e in stopping] == [False, True]


async def test_a_second_sigterm_ends_the_process_at_once(ws: Workspace, qonto):
    """The real process, stuck in one long blocking step (hashing a huge file in done/)."""
    _, url = qonto
    size = 64 * 1024**3  # sparse: no disk space, but a hash of it takes far longer than the test
    ws.done.mkdir(parents=True)
    with (ws.done / "x-1.pdf").open("wb") as fh:
        fh.truncate(size)
    journal = await Journal.open(ws.db)
    try:
        await journal.enqueue(LOGIN, "ab" * 32, ws.inbox / "x.pdf", "x.pdf", size)
        await journal.record_imported(LOGIN, {"ab" * 32: "id-1"})
    finally:
        await journal.close()
    log = ws.root / "daemon.log"
    proc = await daemon(ws.write_toml(url, log={"level": "debug"}), log)
    try:
        await wait_for(lambda: seen(log, "copy_hashing"), what="the long step to begin")
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: seen(log, "daemon_stopping"), what="the first signal taken")
        assert proc.returncode is None  # the first one waits for the step to end
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
