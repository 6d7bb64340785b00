"""The rules workers: processes started when needed, bounded in time and memory,
replaced when they die, stopped when idle. Whatever befalls the checker, the
invoice is never judged a rule failure for it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from helpers import wait_for
from structlog.testing import capture_logs

from daemon.testing.samples import facturx_xml, totals_wrong_xml
from daemon.testing.slow import check_that_signals
from daemon.validator import RulesPool


async def test_a_check_in_a_worker_gives_the_rules_findings():
    pool = RulesPool(1, 60, 1024, 300)
    try:
        report = await pool.check(totals_wrong_xml("V-1"), "en16931", "FR", asyncio.Event())
        assert report is not None and "BR-CO-10" in report.rule_ids()
        good = await pool.check(facturx_xml("V-2", 100), "en16931", "FR", asyncio.Event())
        assert good is not None and good.fatal == () and good.unknown is None
        assert len(pool.pids()) == 1 and pool.pids()[0] != os.getpid()
    finally:
        pool.close()


async def test_a_worker_killed_mid_check_is_replaced_and_the_invoice_judged(tmp_path: Path):
    marker = tmp_path / "started"
    pool = RulesPool(1, 60, 1024, 300, check=check_that_signals)
    try:
        with capture_logs() as logs:
            task = asyncio.ensure_future(
                pool.check(b"<x/>", str(marker), None, asyncio.Event())
            )
            await wait_for(marker.exists, what="the check to start", timeout_s=60)
            (pid,) = pool.pids()
            os.kill(pid, signal.SIGKILL)
            report = await asyncio.wait_for(task, 60)
        assert report is not None and report.unknown is None and report.checked  # judged
        assert pool.pids() and pool.pids() != [pid]
        assert any(e["event"] == "rules_worker_restarted" for e in logs)
    finally:
        pool.close()


async def test_a_check_past_its_time_limit_is_unknown_and_the_worker_replaced(tmp_path: Path):
    marker = tmp_path / "started"
    pool = RulesPool(1, 1.0, 1024, 300, check=check_that_signals)
    try:
        report = await pool.check(b"<x/>", str(marker), None, asyncio.Event())
        assert report is not None and report.fatal == ()
        assert report.unknown and "longer than 1 s" in report.unknown
        assert "rules_timeout_seconds" in report.unknown
        assert pool.pids() == []  # killed
        again = await pool.check(b"<x/>", str(marker), None, asyncio.Event())
        assert again is not None and again.unknown is None  # a fresh worker answers
    finally:
        pool.close()


async def test_a_worker_over_its_memory_limit_makes_the_report_unknown():
    pool = RulesPool(1, 60, 150, 300)  # Saxon cannot compile the rules in 150 MB
    try:
        report = await pool.check(totals_wrong_xml("V-3"), "en16931", "FR", asyncio.Event())
        assert report is not None and report.fatal == () and report.unknown
    finally:
        pool.close()


async def test_idle_workers_stop_and_start_again_when_needed():
    pool = RulesPool(1, 60, 1024, 0.3)
    try:
        first = await pool.check(facturx_xml("V-4", 100), "en16931", "FR", asyncio.Event())
        assert first is not None and first.unknown is None
        (pid,) = pool.pids()
        await wait_for(lambda: not pool.pids(), what="the idle worker to stop", timeout_s=30)
        await wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid),
                       what="its process to end", timeout_s=30)
        again = await pool.check(facturx_xml("V-5", 100), "en16931", "FR", asyncio.Event())
        assert again is not None and again.unknown is None and pool.pids() != [pid]
    finally:
        pool.close()


async def test_stopping_never_waits_for_a_check(tmp_path: Path):
    marker = tmp_path / "started"
    pool = RulesPool(1, 60, 1024, 300, check=check_that_signals)
    stopping = asyncio.Event()
    try:
        task = asyncio.ensure_future(pool.check(b"<x/>", str(marker), None, stopping))
        await wait_for(marker.exists, what="the check to start", timeout_s=60)
        stopping.set()
        assert await asyncio.wait_for(task, 10) is None
        assert pool.pids() == []
    finally:
        pool.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


_UNDER_MDWE = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)  # not enforced: proves nothing
except OSError:
    pass
from daemon.schematron import check, warm_up
from daemon.testing.samples import totals_wrong_xml
warm_up()
print(",".join(check(totals_wrong_xml("M-1"), "en16931", "FR").rule_ids()))
"""


def test_the_rules_run_where_memory_may_not_be_writable_and_executable():
    """The unit's MemoryDenyWriteExecute=yes, as the kernel enforces it (PR_SET_MDWE,
    Linux 6.3+): Saxon's compiled code needs no writable-executable memory."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _UNDER_MDWE], capture_output=True,
                          text=True, timeout=120)
    if done.returncode in (77, 78):
        pytest.skip("this kernel cannot deny writable-executable memory to a process")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "BR-CO-10" in done.stdout.split(",")
