"""Parser workers: a slow or greedy PDF is stopped, and the next file is read as usual."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from pathlib import Path

import pytest
from helpers import wait_for

from daemon.invoice_xml import Invoice
from daemon.parsers import ParseFailed, ParserPool
from daemon.testing.samples import facturx_pdf, slow_pdf
from daemon.testing.slow import slow_parser_start


@pytest.fixture
async def pool():
    parsers = ParserPool(workers=2, timeout_s=1.0, memory_mb=512)
    yield parsers
    parsers.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until reaped: count it as gone (and it may be
    # reaped between the two looks).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_a_slow_pdf_is_stopped_and_others_go_on(pool, tmp_path):
    good = facturx_pdf(tmp_path / "g.pdf", "G-1").read_bytes()
    slow = asyncio.ensure_future(pool.parse(slow_pdf(60_000_000)))  # ~10 s of pypdf work
    for _ in range(3):  # meanwhile the other worker reads ordinary files
        assert (await pool.parse(good)).number == "G-1"
    with pytest.raises(ParseFailed, match="longer than 1 s"):
        await slow
    assert (await pool.parse(good)).number == "G-1"  # a fresh worker took its place


async def test_a_pdf_that_wants_too_much_memory_is_stopped(tmp_path):
    greedy = ParserPool(workers=1, timeout_s=30.0, memory_mb=150)
    try:
        with pytest.raises(ParseFailed):
            await greedy.parse(slow_pdf(70_000_000))  # 70 MB decoded, and copies of it
        good = facturx_pdf(tmp_path / "g.pdf", "G-2").read_bytes()
        assert (await greedy.parse(good)).number == "G-2"
    finally:
        greedy.close()


async def test_a_cancelled_parse_kills_its_worker(pool):
    task = asyncio.ensure_future(pool.parse(slow_pdf(60_000_000)))

    await wait_for(lambda: bool(pool.pids()), what="the worker to start")
    (pid,) = pool.pids()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: not alive(pid), timeout_s=10, what="the worker to be killed")


async def test_what_pypdf_cannot_read_is_a_parse_failure(pool):
    with pytest.raises(ParseFailed, match="cannot be read"):
        await pool.parse(b"%PDF-1.7\nnot really a pdf\n%%EOF\n")


@pytest.mark.parametrize("readable", [True, False])
async def test_a_pdf_read_leaves_no_reference_to_its_bytes(pool, tmp_path, readable):
    # With the garbage collector off, only reference counts free memory: a reference
    # cycle (a frame, its task and an exception) would keep every unreadable scan of
    # a backlog in memory until a full collection.
    if readable:
        data = facturx_pdf(tmp_path / "a.pdf", "A-1").read_bytes()
    else:
        data = b"%PDF-1.7\n" + os.urandom(100_000) + b"\n%%EOF\n"
    before = sys.getrefcount(data)
    gc.disable()
    try:
        found = await pool.read(data, asyncio.Event())
        assert isinstance(found, str) != readable
        # The process pool's own thread lets go of the call a moment after answering.
        await wait_for(lambda: sys.getrefcount(data) == before, what="the bytes let go")
    finally:
        gc.enable()


async def test_a_read_stops_when_the_daemon_stops(pool):
    stopping = asyncio.Event()
    stopping.set()
    assert await pool.read(b"%PDF-1.7\n%%EOF\n", stopping) is None


async def test_closing_the_pool_while_its_parsers_start_is_quiet():
    # The processes start from a thread: close() may come between the pool and its
    # first task (a few loop turns in, it did about one time in three).
    for _ in range(10):
        parsers = ParserPool(workers=2, timeout_s=1.0, memory_mb=512)
        warming = asyncio.ensure_future(parsers.warm())
        for _ in range(3):
            await asyncio.sleep(0)
        parsers.close()
        await asyncio.wait_for(warming, timeout=30)  # nothing escapes


async def test_a_parser_that_died_while_idle_does_not_fail_the_next_file(pool, tmp_path):
    pdf = facturx_pdf(tmp_path / "a.pdf", "A-1").read_bytes()
    assert (await pool.parse(pdf)).number == "A-1"
    pids = pool.pids()
    for pid in pids:  # the OOM killer, or an administrator
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        await wait_for(lambda pid=pid: not alive(pid), timeout_s=10, what="the parser gone")
    for _ in range(3):
        assert (await pool.parse(pdf)).number == "A-1"


async def test_a_parser_restarted_after_dying_idle_does_not_spend_the_files_time(tmp_path):
    # Its start (1.5 s here) is not the file's time (1 s): a good invoice is read,
    # never judged unreadable because the machine was slow to start a process.
    slow_start = ParserPool(workers=1, timeout_s=1.0, memory_mb=512, prepare=slow_parser_start)
    try:
        await slow_start.warm()
        (pid,) = slow_start.pids()
        os.kill(pid, signal.SIGKILL)  # the OOM killer, while the parser is idle
        await wait_for(lambda: not alive(pid), timeout_s=10, what="the parser to die")
        good = facturx_pdf(tmp_path / "g.pdf", "G-9").read_bytes()
        read = await slow_start.read(good, asyncio.Event())
        assert isinstance(read, Invoice), read
        assert read.number == "G-9"
        assert slow_start.pids() and slow_start.pids() != [pid]
    finally:
        slow_start.close()


async def test_a_parser_killed_mid_parse_is_replaced_and_the_pdf_read_again(tmp_path, _logs):
    """Killed from outside (an administrator, the OOM killer): the PDF is not to blame."""
    pool = ParserPool(workers=1, timeout_s=60.0, memory_mb=512)
    try:
        task = asyncio.ensure_future(pool.parse(slow_pdf(20_000_000)))  # a few seconds
        await wait_for(lambda: bool(pool.pids()), what="the parser to start")
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        invoice = await asyncio.wait_for(task, 120)  # read by a fresh parser, not failed
        assert isinstance(invoice, Invoice)  # read to its end: a verdict on the PDF itself
        assert pool.pids() and pool.pids() != [pid]
        assert any(e["event"] == "parser_restarted" for e in _logs)
    finally:
        pool.close()
