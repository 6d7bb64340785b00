"""Settling: when a file is completely written, and the fair queue to the intake."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import wait_for

from daemon.flow.books import Books
from daemon.flow.settle import Settled, Settler, Unfinished, settle_loop
from daemon.identity import Identity, Seen

ID = Identity(1, 1, 1, 1, 1)


def seen(folder: str, name: str) -> Seen:
    return Seen(Path("/srv") / folder / name, ID)


def test_a_backlog_in_one_folder_does_not_hold_up_another():
    queue = Settled()
    for i in range(1000):
        queue.put(seen("month-end", f"f{i}.pdf"))
    queue.put(seen("other-company", "urgent.pdf"))
    queue.put(seen("third", "x.pdf"))
    first = [queue.get_nowait() for _ in range(3)]
    assert {s.path.parent.name for s in first if s} == {"month-end", "other-company", "third"}
    rest = [queue.get_nowait() for _ in range(len(queue))]
    assert [s.path.name for s in rest if s] == [f"f{i}.pdf" for i in range(1, 1000)]
    assert queue.get_nowait() is None and len(queue) == 0


def test_within_a_folder_the_order_of_arrival_is_kept():
    queue = Settled()
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        queue.put(seen("in", name))
    assert [queue.get_nowait().path.name for _ in range(3)] == ["a.pdf", "b.pdf", "c.pdf"]


async def test_get_waits_for_a_file_or_the_stop():
    queue = Settled()
    stopping = asyncio.Event()
    waiter = asyncio.ensure_future(queue.get(stopping))
    await asyncio.sleep(0)
    queue.put(seen("in", "late.pdf"))
    assert (await asyncio.wait_for(waiter, 5)).path.name == "late.pdf"
    waiter = asyncio.ensure_future(queue.get(stopping))
    stopping.set()
    assert await asyncio.wait_for(waiter, 5) is None


# -- Settler and Unfinished: pure, on a fake clock -------------------------------------

OTHER_ID = Identity(1, 1, 2, 2, 2)


def test_a_file_settles_after_holding_still_for_settle_s():
    settler = Settler(settle_s=5.0, unstable_warning_s=600.0)
    path = Path("/in/a.pdf")
    settler.observe(Seen(path, ID), 0.0)
    assert settler.due(4.9) == [] and settler.settled(4.9) == []
    assert settler.next_due(1.0) == 4.0
    assert [s.path for s in settler.settled(5.0)] == [path]
    assert path not in settler and settler.next_due(5.0) is None


def test_a_change_or_an_event_starts_the_wait_again():
    settler = Settler(settle_s=5.0, unstable_warning_s=600.0)
    path = Path("/in/a.pdf")
    settler.observe(Seen(path, ID), 0.0)
    settler.observe(Seen(path, OTHER_ID), 4.0)  # it grew
    assert settler.settled(5.0) == []
    settler.touched(path, 8.0)  # the watcher saw a write, the stat did not change
    assert settler.settled(9.5) == []
    assert len(settler.settled(13.0)) == 1


def test_a_file_known_only_by_name_needs_a_stat_first():
    settler = Settler(settle_s=5.0, unstable_warning_s=600.0)
    path = Path("/in/a.pdf")
    settler.track(path, 0.0)
    assert settler.due(0.0) == [path]  # stat it at once
    assert settler.settled(100.0) == []  # never handed out without a stat


def test_a_file_changing_for_long_is_warned_about_once():
    settler = Settler(settle_s=5.0, unstable_warning_s=60.0)
    path = Path("/in/a.pdf")
    settler.observe(Seen(path, ID), 0.0)
    assert settler.unstable(59.0) == []
    assert settler.unstable(61.0) == [(path, 61.0)]
    assert settler.unstable(120.0) == []


def test_an_incomplete_file_is_looked_at_again_then_judged():
    unfinished = Unfinished(fail_s=600.0, recheck_s=5.0)
    path = Path("/in/a.pdf")
    assert unfinished.note(path, ID, 0.0) == (True, 0.0)
    assert unfinished.unchanged(Seen(path, ID), 10.0)
    assert unfinished.next_look(path, 10.0) == 15.0
    assert unfinished.note(path, ID, 300.0) == (False, 300.0)
    assert unfinished.next_look(path, 598.0) == 600.0  # at the latest when its time is up
    assert not unfinished.unchanged(Seen(path, ID), 600.0)  # due for its verdict
    assert not unfinished.unchanged(Seen(path, OTHER_ID), 10.0)  # written to: read it
    assert unfinished.note(path, OTHER_ID, 700.0) == (True, 0.0)


async def test_the_settle_loop_hands_out_still_files_and_lets_vanished_ones_go(tmp_path):
    now = [1000.0]
    settler = Settler(settle_s=5.0, unstable_warning_s=600.0)
    books = Books(settler, Unfinished(600.0, 5.0), clock=lambda: now[0])
    settled = Settled()
    stopping = asyncio.Event()
    still, gone = tmp_path / "still.pdf", tmp_path / "gone.pdf"
    still.write_bytes(b"%PDF-1.7 ...%%EOF")
    for path in (still, gone):
        books.consider(Seen(path, Identity.lstat(still)), now[0])
    loop = asyncio.create_task(settle_loop(settler, books, settled, stopping, lambda: now[0]))
    try:
        now[0] += 5.0  # on the daemon's clock: both have held still long enough
        settler.wake.set()
        await wait_for(lambda: len(settled) == 1 and gone not in books, what="the loop's pass")
        assert settled.get_nowait() == Seen(still, Identity.lstat(still))
        assert still in books  # in hand until the intake is done with it
        assert books.counts.left == 0  # the vanished file is simply gone, not counted
    finally:
        stopping.set()
        await asyncio.wait_for(loop, 5)


def test_a_restart_does_not_give_a_half_written_file_more_time():
    unfinished = Unfinished(fail_s=600.0, recheck_s=5.0)
    path = Path("/in/a.pdf")
    # Found incomplete just after a restart; by its ctime it has not changed for 590 s.
    first, waited_s = unfinished.note(path, ID, 1000.0, unchanged_s=590.0)
    assert first and waited_s == 590.0
    assert unfinished.next_look(path, 1000.0) == 1005.0
    assert unfinished.note(path, ID, 1010.0) == (False, 600.0)  # judged now, not in 10 min
    # A share's clock far off says nothing beyond the limit.
    assert unfinished.note(Path("/in/b.pdf"), ID, 0.0, unchanged_s=1e9) == (True, 600.0)
