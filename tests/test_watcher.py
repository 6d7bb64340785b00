"""The watcher: inboxes that come and go, names that are not UTF-8, never dead in silence.

Every test sets rescan_seconds to an hour: what is picked up is picked up by
the watcher (or by the rescan it asks for when it had to start again).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from helpers import LOGIN, events, names, sha256_of, wait_for

from daemon.testing.samples import facturx_pdf

HOUR = {"rescan_seconds": 3600.0}


async def test_an_inbox_deleted_and_recreated_is_watched_again(ws, qonto, start, _logs):
    emulator, url = qonto
    running = await start(ws.config(url, watch=HOUR))
    ws.invoice("before.pdf")
    await wait_for(lambda: "before.pdf" in names(ws.done), what="before.pdf in done/")
    await asyncio.to_thread(shutil.rmtree, ws.inbox)  # the share goes away...
    ws.inbox.mkdir()  # ...and comes back, as a new directory
    ws.invoice("after.pdf")
    await wait_for(lambda: "after.pdf" in names(ws.done), timeout_s=30, what="after.pdf")
    assert len(emulator.invoices_of(LOGIN)) == 2
    assert not events(_logs, "watcher_error")
    assert await running.stop() == 0


async def test_an_inbox_created_after_start_is_watched(ws, qonto, start):
    emulator, url = qonto
    await asyncio.to_thread(shutil.rmtree, ws.inbox)
    running = await start(ws.config(url, watch=HOUR))
    await asyncio.sleep(0.2)
    ws.inbox.mkdir()
    ws.invoice("late.pdf")
    await wait_for(lambda: "late.pdf" in names(ws.done), timeout_s=15, what="late.pdf")
    assert await running.stop() == 0


async def test_a_name_that_is_not_utf8_is_picked_up(ws, qonto, start, _logs):
    emulator, url = qonto
    running = await start(ws.config(url, watch=HOUR))
    ws.invoice("first.pdf")
    await wait_for(lambda: "first.pdf" in names(ws.done), what="first.pdf in done/")
    src = facturx_pdf(ws.root / "src.pdf", "LATIN1")
    raw_name = os.fsencode(ws.inbox) + b"/facture-\xe9t\xe9.pdf"  # Latin-1 from an old ERP
    tmp = os.fsencode(ws.inbox) + b"/.facture.tmp"
    await asyncio.to_thread(Path(os.fsdecode(tmp)).write_bytes, src.read_bytes())
    os.rename(tmp, raw_name)
    done_name = os.fsdecode(b"facture-\xe9t\xe9.pdf")
    await wait_for(lambda: done_name in names(ws.done), timeout_s=15, what="the Latin-1 name")
    assert sha256_of(src) in emulator.invoices_of(LOGIN)
    ws.invoice("after.pdf")  # and the watcher is still alive
    await wait_for(lambda: "after.pdf" in names(ws.done), timeout_s=30, what="after.pdf")
    assert not events(_logs, "watcher_error")
    assert await running.stop() == 0


async def test_once_watching_is_set_a_new_file_is_reported(tmp_path):
    # What lets the first listing at start-up wait for the watcher and skip the
    # second listing its first tick would ask for.
    from daemon import watcher

    stop, watching = asyncio.Event(), asyncio.Event()
    hints: list[watcher.Hints] = []

    async def follow() -> None:
        async for h in watcher.watch(
            [tmp_path], stop, force_polling=False, poll_delay_ms=1000, watching=watching
        ):
            hints.append(h)

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(watching.wait(), timeout=10)
        (tmp_path / "new.pdf").write_bytes(b"%PDF-1.7\n")
        await wait_for(
            lambda: any(tmp_path / "new.pdf" in h.paths for h in hints), what="new.pdf reported"
        )
        started = [h for h in hints if h.rescan]
        assert started and started[0].watching_since is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_a_rescan_asked_for_during_a_listing_gets_a_listing_of_its_own(ws):
    # A watcher restart (or SIGHUP) while the inboxes are being listed: what was
    # created behind the listing's back is found by the next one, not an hour later.
    from daemon.flow.books import Books
    from daemon.flow.discover import Discovery
    from daemon.flow.settle import Settler, Unfinished
    from daemon.timing import Intervals

    cfg = ws.config("http://127.0.0.1:9", watch=HOUR)
    settler = Settler(1.0, 600.0)
    books = Books(settler, Unfinished(600.0, 1.0))
    stopping = asyncio.Event()
    listings: list[Path] = []

    class Listing(Discovery):
        async def scan(self, folder: Any, present: Any = None) -> bool:
            listings.append(folder.inbox)
            if len(listings) == 1:
                self.rescan()  # asked for while this listing runs
            return await super().scan(folder, present)

    discovery = Listing(
        cfg, books, stopping, intervals=Intervals(watcher_start_s=0.0, rescan_gap_s=0.05)
    )
    loop = asyncio.create_task(discovery.rescan_loop())
    try:
        await wait_for(lambda: len(listings) >= 2, timeout_s=10, what="a second listing")
    finally:
        stopping.set()
        await asyncio.wait_for(loop, timeout=10)
