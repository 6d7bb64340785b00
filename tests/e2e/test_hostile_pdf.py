"""A crafted PDF that keeps the parser busy, and a sparse file of many GB: nothing stalls."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from helpers import LOGIN, Workspace, daemon, finish, log_events, names, seen, sha256_of, wait_for

from daemon.testing.samples import slow_pdf

SLOW = 60_000_000  # decoded bytes: about 10 s of pypdf work on this machine's kind


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_a_slow_pdf_is_cut_short_while_the_others_are_imported(ws: Workspace, qonto):
    emulator, url = qonto
    (ws.inbox / "crafted.pdf").write_bytes(slow_pdf(SLOW))
    toml = ws.write_toml(url, validation={"facturx": "require", "parse_timeout_seconds": 3.0,
                                          "parse_memory_mb": 1024})  # time, not memory
    log = ws.root / "daemon.log"
    proc = await daemon(toml, log)
    peak = 0.0
    try:
        await wait_for(lambda: seen(log, "daemon_started"), what="daemon_started")
        valid = [ws.invoice(f"ok-{i}.pdf", f"OK-{i}") for i in range(5)]
        shas = {sha256_of(p) for p in valid}

        def imported() -> bool:
            nonlocal peak
            peak = max(peak, rss_mb(proc.pid))
            return shas <= set(emulator.invoices_of(LOGIN))

        await wait_for(imported, what="the five ordinary invoices")
        # Meanwhile the crafted file was still being read (3 s limit, 10 s of work).
        assert (ws.inbox / "crafted.pdf").exists()
        await wait_for(lambda: (ws.failed / "crafted.pdf").exists(), what="crafted.pdf failed")
        peak = max(peak, rss_mb(proc.pid))
        proc.send_signal(signal.SIGTERM)
        assert await finish(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    report = json.loads((ws.failed / "crafted.pdf.error.json").read_text())
    assert report["reason"] == "facturx_unreadable" and "3 s" in report["detail"]
    assert peak < 300, f"the daemon itself grew to {peak:.0f} MB"


async def test_sigterm_during_a_parse_does_not_wait_for_it(ws: Workspace, qonto):
    _, url = qonto
    toml = ws.write_toml(url, validation={"parse_timeout_seconds": 120.0},
                         log={"level": "debug"}, service={"shutdown_grace_seconds": 30.0})
    log = ws.root / "daemon.log"
    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: seen(log, "daemon_started"), what="daemon_started")
        (ws.inbox / "crafted.pdf").write_bytes(slow_pdf(SLOW))
        await wait_for(lambda: seen(log, "file_parsing"), what="the parse to start")
        proc.send_signal(signal.SIGTERM)
        # The parse has seconds of work left and the grace period is 30 s: the stop
        # waits for neither.
        assert await asyncio.wait_for(proc.wait(), 8) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (ws.inbox / "crafted.pdf").exists()  # left for the next start
    assert log_events(log)[-1]["event"] == "daemon_stopped"


async def test_a_sparse_file_of_many_gigabytes_is_failed_at_once(ws: Workspace, qonto, start):
    _, url = qonto
    huge = ws.inbox / "huge.pdf"
    with huge.open("wb") as fh:
        fh.write(b"%PDF-1.7\n")
        fh.truncate(100 * 1024**3)  # 100 GB that take no space: hashing them would take minutes
    ws.invoice("small.pdf")
    running = await start(ws.config(url), once=True)
    assert await asyncio.wait_for(running.task, 60) == 1
    report = json.loads((ws.failed / "huge.pdf.error.json").read_text())
    assert report["reason"] == "too_large" and report["sha256"] is None
    assert names(ws.done) == {"small.pdf"}
    assert (await asyncio.to_thread(os.path.getsize, ws.failed / "huge.pdf")) == 100 * 1024**3


async def test_a_huge_file_is_not_copied_into_failed_on_another_filesystem(
    ws: Workspace, qonto, start, tmpfs, _logs
):
    _, url = qonto
    failed = tmpfs("failed", size="16m")
    huge = ws.inbox / "huge.pdf"
    with huge.open("wb") as fh:
        fh.write(b"%PDF-1.7\n")
        fh.truncate(20 * 1024**3)
    raw = ws.config_dict(url, watch={"rescan_seconds": 0.2})
    raw["folders"][0]["failed"] = str(failed)
    from helpers import ENV

    from daemon import config as config_mod

    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    sidecar = ws.inbox / "huge.pdf.error.json"
    await wait_for(sidecar.exists, what="the report beside the file")
    ws.invoice("after.pdf")  # several rescans later, the huge file was not judged again
    await wait_for(lambda: (ws.done / "after.pdf").exists(), what="after.pdf in done/")
    assert await running.stop() == 0
    assert json.loads(sidecar.read_text())["reason"] == "too_large"
    assert huge.exists() and os.listdir(failed) == []
    assert len([e for e in _logs if e["event"] == "file_failed"]) == 1  # judged once


async def test_parsers_do_not_outlive_a_killed_daemon(ws: Workspace, qonto):
    _, url = qonto
    toml = ws.write_toml(url, log={"level": "debug"})
    log = ws.root / "daemon.log"
    ws.invoice("a.pdf")
    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: seen(log, "parser_started"), what="a parser process")
        pids = [e["pid"] for e in log_events(log) if e["event"] == "parser_started"]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    def gone(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        return state == "Z"

    await wait_for(lambda: all(gone(pid) for pid in pids), timeout_s=15,
                   what="the parser processes to end with the daemon")
