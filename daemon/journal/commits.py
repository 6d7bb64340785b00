"""The journal's engine: one SQLite connection, writes committed in groups.

The journal is a SQLite file that is the durable truth about every file's
content. The invoice_id is committed (synchronous=FULL, so it survives power
loss) before the file is moved; everything after a crash is re-derived from
the rows and the folders. The tables' own operations live beside this module,
one per table family; this one knows only statements and commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite
import structlog

from ..aio import wait_event, wait_first
from ..errors import JournalError, JournalUnavailable
from ..identity import describe_mode
from .schema import HINT_DAMAGED, migrate, open_error
from .sql import HINT_FULL, closed, full, quietly, run_closed, uncancellable

log = structlog.get_logger()
T = TypeVar("T")
Connect = Callable[[Path], aiosqlite.Connection]
_RETRY_INITIAL_S, _RETRY_MAX_S = 1.0, 30.0


def readonly_uri(path: Path) -> str | None:
    return path.resolve().as_uri() + "?mode=ro" if path.exists() else None


def _can_connect(database: str, *, uri: bool = False) -> None:
    """Raise what connecting (and a first read) would raise, before aiosqlite starts
    its thread: a connection that fails leaves that thread to answer after the
    caller (a command's event loop) may be gone, and SQLite opens a file that is
    not a database without a word until it is read."""
    conn = sqlite3.connect(database, uri=uri)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


def _not_a_file(path: Path) -> JournalError | None:
    """A journal path that names a folder (or something else than a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    return JournalError(
        path, f"it is {describe_mode(st.st_mode)}, not a file",
        "point [database] path at a file (it is created if missing) in a folder the "
        "daemon's user may write",
    )


def make_private(path: Path) -> None:
    """The journal's folder (0700) and an empty journal file (0600), when missing.

    The journal holds OAuth refresh tokens and what every invoice says: outside
    systemd (whose StateDirectory= is 0700) it must not be readable by others.
    SQLite gives its -wal and -shm files the journal's own mode.
    """
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _where(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Store:
    """One long-lived aiosqlite connection; open with `await Journal.open(path)`.

    Writes are serialised and committed in groups: statements run one at a
    time in the open transaction (so the next read sees them at once), and one
    commit makes durable every statement run before it, however many writers
    wait for it (as databases group commits). A writer that passes
    `wait=False` does not wait: the statement is made durable by the next
    commit, which `keep_committed` makes happen promptly. When the disk is
    full the transaction is rolled back and every statement of it is run
    again once space returns: meanwhile nothing that needs a record goes ahead.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path | None = None) -> None:
        self._db = db
        self.path = path
        self._where: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        # The same of its -wal and -shm files, once seen: SQLite writes through them.
        self._companions: dict[str, tuple[int, int] | None] = {}
        self._lock = asyncio.Lock()
        self._unavailable = False
        # The open transaction: its statements (replayed after a rollback) and
        # the future its writers wait on, resolved by the commit that ends it.
        self._tx: list[Callable[[], Awaitable[object]]] = []
        self._tx_done: asyncio.Future[None] | None = None
        self._uncommitted = asyncio.Event()
        # Set by the service when it stops: a write still refused then gives up.
        self.stopping = asyncio.Event()

    @classmethod
    async def open(cls, path: Path, *, connect: Connect = aiosqlite.connect) -> Self:
        """Open (or create) the journal; JournalError says what is wrong and what to do.

        `connect` makes the connection (aiosqlite's own, or a test's stand-in at
        that edge: a disk that fills up, commits that are counted).
        """
        if (wrong := await asyncio.to_thread(_not_a_file, path)) is not None:
            raise wrong
        existed = await asyncio.to_thread(path.exists)
        try:
            await asyncio.to_thread(make_private, path)
        except OSError as exc:
            raise JournalError(
                path, f"cannot create its folder (or the file): {exc.strerror or exc}",
                "create the folder, or let systemd make it (StateDirectory=)",
                temporary=exc.errno in (errno.ENOSPC, errno.EDQUOT),
            ) from None
        try:
            await asyncio.to_thread(_can_connect, str(path))
            db = await connect(path)
        except sqlite3.Error as exc:
            raise open_error(path, exc) from None
        try:
            db.row_factory = sqlite3.Row
            await run_closed(db, "PRAGMA busy_timeout = 10000")
            async with db.execute("PRAGMA quick_check") as cur:
                row = await cur.fetchone()
            if row is None or row[0] != "ok":
                raise JournalError(
                    path, f"the file is damaged (quick_check: {row[0] if row else 'no answer'})",
                    HINT_DAMAGED,
                )
            await run_closed(db, "PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before we move a file because of it.
            await run_closed(db, "PRAGMA synchronous = FULL")
            await migrate(db, path)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise open_error(path, exc) from None
            raise
        journal = cls(db, path)
        journal._where = await asyncio.to_thread(_where, path)
        for suffix in ("-wal", "-shm"):
            journal._companions[suffix] = await asyncio.to_thread(
                _where, path.with_name(path.name + suffix)
            )
        if not existed:
            log.info("journal_created", path=path)
        return journal

    async def exposed(self, *, oauth: bool) -> str | None:
        """What to say when the journal can be read by its group or by others."""
        if self.path is None:
            return None
        try:
            mode = (await asyncio.to_thread(os.stat, self.path)).st_mode
        except OSError:
            return None
        if not mode & 0o077:
            return None
        return (
            f"the journal {self.path} can be read by its group or by others (mode "
            f"{mode & 0o777:o}): it holds what every invoice says"
            + (" and the OAuth refresh tokens" if oauth else "")
            + "; make it 0600 (chmod 600, with its -wal and -shm)"
        )

    async def in_place(self) -> bool:
        """Whether the file at the journal's path is still the one this daemon writes to,
        with the -wal and -shm files it writes through (deleted, SQLite would go on
        writing into files nobody can see, and the journal come back empty)."""
        if self.path is None:
            return True
        if await asyncio.to_thread(_where, self.path) != self._where:
            return False
        for suffix in ("-wal", "-shm"):
            now = await asyncio.to_thread(_where, self.path.with_name(self.path.name + suffix))
            seen = self._companions.get(suffix)
            if seen is None:
                self._companions[suffix] = now  # the first look, or not there yet
            elif now != seen:
                return False
        return True

    async def write(self, sql: str, *args: Any, wait: bool = True) -> aiosqlite.Cursor:
        """One statement in the open transaction (for maintenance and tests); with
        `wait`, it returns once committed. Its cursor is closed where it ran."""
        return await self._write(lambda: self._db.execute(sql, *args), wait=wait)

    async def _write(self, statements: Callable[[], Awaitable[T]], *, wait: bool = True) -> T:
        """Run `statements` in the open transaction; with `wait`, return once committed."""
        result, done = await uncancellable(self._execute(statements))
        if not wait:
            self._uncommitted.set()
            return result
        await self._durable(done)
        return result

    async def _execute(
        self, statements: Callable[[], Awaitable[T]]
    ) -> tuple[T, asyncio.Future[None]]:
        async with self._lock:
            result = await self._run(statements)
            self._tx.append(statements)
            if self._tx_done is None:
                self._tx_done = asyncio.get_running_loop().create_future()
            return result, self._tx_done

    async def flush(self) -> None:
        """Commit what runs uncommitted (writes made with wait=False)."""
        if self._tx_done is not None:
            await self._durable(self._tx_done)

    async def keep_committed(self, stopping: asyncio.Event) -> None:
        """Commit writes made with wait=False soon after they run (a service task)."""
        while not stopping.is_set():
            await wait_first(self._uncommitted, stopping)
            self._uncommitted.clear()
            await self.flush()

    async def _durable(self, done: asyncio.Future[None]) -> None:
        if not done.done():
            await uncancellable(self._commit_unless(done))
        done.result()  # raises if the transaction was lost

    async def _commit_unless(self, done: asyncio.Future[None]) -> None:
        async with self._lock:
            if not done.done():  # else a commit since took these statements along
                await self._commit()

    async def _run(self, statements: Callable[[], Awaitable[T]]) -> T:
        """One writer's statements (under the lock); a full disk is waited out."""
        while True:
            try:
                return await closed(await statements())
            except sqlite3.OperationalError as exc:
                # The whole transaction may be gone: put back the others' statements.
                await self._recover(exc)
                if not full(exc):
                    raise

    async def _commit(self) -> None:
        """Commit the open transaction (under the lock); a full disk is waited out."""
        while True:
            try:
                await self._db.commit()
            except sqlite3.OperationalError as exc:
                if not full(exc):
                    await quietly(self._db.rollback())
                    self._end_tx(JournalUnavailable(f"{self.path}: {exc}"))
                    raise
                await self._recover(exc)
                continue
            if self._unavailable:
                self._unavailable = False
                log.info("journal_available", path=self.path)
            self._end_tx(None)
            return

    def _end_tx(self, error: Exception | None) -> None:
        done, self._tx_done = self._tx_done, None
        self._tx.clear()
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
                done.exception()  # its writers are told; nobody else needs to retrieve it

    async def _recover(self, exc: sqlite3.OperationalError) -> None:
        """Roll back; on a full disk, wait for space; run the open transaction again."""
        delay_s = _RETRY_INITIAL_S
        while True:
            await quietly(self._db.rollback())
            if full(exc):
                if self.stopping.is_set():
                    error = JournalUnavailable(f"{self.path}: {exc}")
                    self._end_tx(error)
                    raise error from None
                if not self._unavailable:
                    self._unavailable = True
                    log.error(
                        "journal_unavailable", path=self.path, error=str(exc),
                        hint=HINT_FULL + " (meanwhile no file is taken or sent)",
                    )
                if not await wait_event(self.stopping, delay_s):
                    delay_s = min(delay_s * 2, _RETRY_MAX_S)
            try:
                for statements in self._tx:
                    await closed(await statements())
            except sqlite3.OperationalError as again:
                exc = again
                if not full(exc):
                    # Nothing of this transaction may be committed by the next writer.
                    await quietly(self._db.rollback())
                    self._end_tx(JournalUnavailable(f"{self.path}: {exc}"))
                    raise
                continue
            return

    @classmethod
    async def open_readonly(cls, path: Path) -> Self | None:
        """For `lookup` beside a running daemon; None when there is no journal yet."""
        if (wrong := await asyncio.to_thread(_not_a_file, path)) is not None:
            raise wrong
        uri = await asyncio.to_thread(readonly_uri, path)
        if uri is None:
            return None
        try:
            await asyncio.to_thread(_can_connect, uri, uri=True)
            db = await aiosqlite.connect(uri, uri=True)
            db.row_factory = sqlite3.Row
            await run_closed(db, "PRAGMA busy_timeout = 10000")
        except sqlite3.Error as exc:
            raise open_error(path, exc) from None
        return cls(db, path)

    async def close(self) -> None:
        if self._tx_done is not None:
            with contextlib.suppress(sqlite3.Error, JournalUnavailable):
                await self.flush()
        await self._db.close()

    # Reads take one trip to SQLite's thread (execute_fetchall): the intake's
    # decisions run one at a time, and each trip is on that path.
