"""Is the file completely written, and is it still the file that was judged?"""

from __future__ import annotations

import asyncio
import json
import os
import time

from helpers import (
    LOGIN,
    events,
    journal_row,
    journal_state,
    names,
    sha256_of,
    wait_for,
    wait_until,
)

from daemon.testing.samples import facturx_pdf


async def test_a_writer_pausing_longer_than_settle_never_gets_half_a_file_sent(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    running = await start(ws.config(url, watch={"settle_seconds": 0.2}))
    whole = facturx_pdf(ws.root / "src.pdf", "PAUSED").read_bytes()
    target = ws.inbox / "paused.pdf"
    with target.open("wb") as fh:
        fh.write(whole[: len(whole) // 2])
        fh.flush()
        # The writer (a scanner on a share) pauses far longer than settle_seconds.
        await wait_for(lambda: events(_logs, "file_incomplete"), what="file_incomplete")
        await asyncio.sleep(0.5)
        fh.write(whole[len(whole) // 2 :])
    await wait_for(lambda: "paused.pdf" in names(ws.done), what="paused.pdf in done/")
    assert list(emulator.invoices_of(LOGIN)) == [sha256_of(ws.done / "paused.pdf")]
    assert (ws.done / "paused.pdf").read_bytes() == whole
    assert emulator.requests == 1
    assert await running.stop() == 0


async def test_a_file_that_stays_incomplete_fails_as_truncated(ws, qonto, start, _logs):
    emulator, url = qonto
    whole = facturx_pdf(ws.root / "src.pdf", "CUT").read_bytes()
    (ws.inbox / "cut.pdf").write_bytes(whole[:-200])
    ws.invoice("fine.pdf")
    cfg = ws.config(url, watch={"settle_seconds": 0.1, "incomplete_fail_seconds": 1.0})
    running = await start(cfg)
    await wait_for(lambda: "cut.pdf.error.json" in names(ws.failed), what="cut.pdf failed")
    report = json.loads((ws.failed / "cut.pdf.error.json").read_text())
    assert report["reason"] == "truncated" and "%%EOF" in report["detail"]
    await wait_for(lambda: names(ws.done) == {"fine.pdf"}, what="fine.pdf imported")
    assert len(emulator.invoices_of(LOGIN)) == 1
    assert len(events(_logs, "file_incomplete")) == 1  # said once, not at every look
    assert await running.stop() == 0


async def test_run_once_leaves_an_incomplete_file_waiting(ws, qonto, start):
    emulator, url = qonto
    whole = facturx_pdf(ws.root / "src.pdf", "CUT").read_bytes()
    (ws.inbox / "cut.pdf").write_bytes(whole[: len(whole) // 3])
    ws.invoice("fine.pdf")
    started = time.monotonic()
    running = await start(ws.config(url), once=True)  # incomplete_fail_seconds stays 600
    assert await asyncio.wait_for(running.task, 30) == 1
    assert time.monotonic() - started < 30
    assert names(ws.inbox) == {"cut.pdf"} and names(ws.done) == {"fine.pdf"}
    assert len(emulator.invoices_of(LOGIN)) == 1


async def test_replaced_by_same_size_and_mtime_during_upload_is_imported_too(ws, qonto, start):
    """A writer that keeps the invoice date as mtime replaces the file mid-upload."""
    emulator, url = qonto
    emulator.faults.slow, emulator.faults.slow_s = 1.0, 1.0
    # Both versions carry the same invoice number: only identity is at stake here.
    running = await start(ws.config(url, validation={"duplicate_number": "off"}))
    path = ws.invoice("F.pdf", "FIRST-0001")
    first = sha256_of(path)
    st = path.stat()
    await wait_for(lambda: emulator.requests >= 1, what="the first upload to start")
    emulator.faults.slow = 0.0
    # Another version of the same size: one byte of the PDF's binary comment line differs.
    data = bytearray(path.read_bytes())
    comment = data.index(b"\n%", 5) + 2
    data[comment] ^= 0x01
    with path.open("r+b") as fh:  # rewritten in place: same inode
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime put back
    second = sha256_of(path)
    assert second != first
    await wait_for(lambda: second in emulator.invoices_of(LOGIN), what="the new content imported")
    await wait_for(lambda: not names(ws.inbox), what="the inbox to empty")
    assert first in emulator.invoices_of(LOGIN)
    (done,) = list(ws.done.iterdir())
    assert sha256_of(done) == second
    await wait_until(
        lambda: _state_is(ws, second, "done"), what="the new content recorded in done/"
    )
    assert (await journal_row(ws, first)).state == "imported"  # sent, but its file is gone
    assert await running.stop() == 0


async def _state_is(ws, sha: str, state: str) -> bool:
    return await journal_state(ws, sha) == state
