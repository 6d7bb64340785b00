"""Small SQLite helpers shared by the journal's modules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")

HINT_FULL = "free space on that filesystem; the daemon waits and carries on by itself"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def path_blob(path: Path) -> bytes:
    """Paths are kept as bytes: names need not be UTF-8."""
    return os.fsencode(path)


def blob_path(blob: bytes) -> Path:
    return Path(os.fsdecode(bytes(blob)))


async def run_closed(db: aiosqlite.Connection, sql: str, *args: Any) -> None:
    """Execute and close the cursor in SQLite's own thread.

    A cursor left to the garbage collector is finalised in whichever thread
    drops it; if that is the event loop's while SQLite's thread reuses the same
    cached statement, sqlite3 fails with "bad parameter or other API misuse".
    """
    async with db.execute(sql, *args):
        pass


async def closed(result: T) -> T:
    if isinstance(result, aiosqlite.Cursor):
        await result.close()  # in SQLite's thread (see run_closed); rowcount stays
    return result


async def uncancellable(work: Awaitable[T]) -> T:
    """Run a journal step to its end even if the caller is cancelled meanwhile.

    A step holds the lock over the open transaction (statements, a commit, a
    rollback and replay after a full disk): cut short, it would leave other
    writers' statements rolled back while they wait for a commit that says
    they are on disk. The caller still sees its cancellation at once.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Nobody awaits it now: its failure, if any, is already told to the
        # transaction's writers.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise


async def quietly(step: Awaitable[object]) -> None:
    with contextlib.suppress(sqlite3.Error, ValueError):
        await step


def full(exc: sqlite3.Error) -> bool:
    """A write refused for lack of space (or an I/O error): wait and try again."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or (
        code is not None and code & 0xFF == sqlite3.SQLITE_IOERR
    ) or "disk is full" in str(exc)
