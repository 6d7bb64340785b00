"""The intake's queue: settled files are taken in turn from each folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon.flow.settle import Settled as FairQueue
from daemon.identity import Identity
from daemon.watcher import Seen

ID = Identity(1, 1, 1, 1, 1)


def seen(folder: str, name: str) -> Seen:
    return Seen(Path("/srv") / folder / name, ID)


def test_a_backlog_in_one_folder_does_not_hold_up_another():
    queue = FairQueue()
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
    queue = FairQueue()
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        queue.put(seen("in", name))
    assert [queue.get_nowait().path.name for _ in range(3)] == ["a.pdf", "b.pdf", "c.pdf"]


async def test_get_waits_for_a_file_or_the_stop():
    queue = FairQueue()
    stopping = asyncio.Event()
    waiter = asyncio.ensure_future(queue.get(stopping))
    await asyncio.sleep(0)
    queue.put(seen("in", "late.pdf"))
    assert (await asyncio.wait_for(waiter, 5)).path.name == "late.pdf"
    waiter = asyncio.ensure_future(queue.get(stopping))
    stopping.set()
    assert await asyncio.wait_for(waiter, 5) is None
