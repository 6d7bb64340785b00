"""Small waiting helpers shared by the long-lived loops."""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_first(
    *waitables: asyncio.Event | asyncio.Future[Any], timeout_s: float | None = None
) -> None:
    """Wait until any event is set or future done, or `timeout_s` passes."""
    owned: list[asyncio.Future[Any]] = []
    futures: list[asyncio.Future[Any]] = []
    for w in waitables:
        if isinstance(w, asyncio.Event):
            fut: asyncio.Future[Any] = asyncio.ensure_future(w.wait())
            owned.append(fut)
            futures.append(fut)
        else:
            futures.append(w)
    try:
        await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in owned:
            fut.cancel()


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait for `event` at most `timeout_s`; True if it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
