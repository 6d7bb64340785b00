"""The journal: a SQLite file that is the durable truth about every file's content.

One row per (organization, sha256). A row's state moves
queued -> sending -> imported -> done, or to failed. The invoice_id is
committed (synchronous=FULL, so it survives power loss) before the file is
moved; everything after a crash is re-derived from these rows and the folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from .aio import wait_event, wait_first
from .errors import JournalError, JournalUnavailable
from .invoice_xml import Invoice

log = structlog.get_logger()
T = TypeVar("T")

QUEUED, SENDING, IMPORTED, DONE, FAILED = "queued", "sending", "imported", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    org         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    state       TEXT NOT NULL,
    invoice_id  TEXT,
    path        BLOB NOT NULL,     -- where the file is now; bytes, as names need not be UTF-8
    file_name   TEXT NOT NULL,     -- the name sent to Qonto
    size        INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (org, sha256)
);
CREATE INDEX IF NOT EXISTS invoices_sha256 ON invoices (sha256);
CREATE INDEX IF NOT EXISTS invoices_state ON invoices (state);
"""

# Facts from the invoice XML, NULL when there is none (or it was not read).
FACT_COLUMNS = (
    "flavor", "profile", "invoice_number", "type_code", "issue_date", "seller", "seller_key",
    "buyer", "grand_total", "currency",
)
_MIGRATE_TO_2 = "".join(f"ALTER TABLE invoices ADD COLUMN {c} TEXT;\n" for c in FACT_COLUMNS) + (
    "CREATE INDEX IF NOT EXISTS invoices_number ON invoices (org, seller_key, invoice_number);\n"
    # What the running daemon knows of each organization, for `status`.
    "CREATE TABLE IF NOT EXISTS organizations (\n"
    "    org TEXT PRIMARY KEY, paused INTEGER, paused_reason TEXT,\n"
    "    last_success_at TEXT, last_error TEXT, last_error_at TEXT, updated_at TEXT NOT NULL);\n"
    # OAuth refresh tokens rotate: the newest is kept here, durably, before it is used.
    # `configured` is the sha256 of the token in the configuration it replaced.
    "CREATE TABLE IF NOT EXISTS oauth_tokens (\n"
    "    org TEXT PRIMARY KEY, refresh_token TEXT NOT NULL, configured TEXT NOT NULL,\n"
    "    updated_at TEXT NOT NULL);\n"
)

# Imported invoices sent by e-invoice, and what Qonto says of each since. state:
# pending (to send) -> submitted (accepted, tracked) -> final (a final lifecycle
# code, or the tracking period is over); rejected (refused; `retry --einvoice`).
# `lifecycle` is JSON: [[code, "when"], ...], oldest first. `next_at` is wall-clock
# seconds: when to send or look again, across restarts.
_MIGRATE_TO_3 = """
CREATE TABLE IF NOT EXISTS einvoices (
    org                TEXT NOT NULL,
    invoice_id         TEXT NOT NULL,
    sha256             TEXT NOT NULL,
    state              TEXT NOT NULL,
    einvoicing_status  TEXT,
    lifecycle          TEXT NOT NULL DEFAULT '[]',
    detail             TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    checks             INTEGER NOT NULL DEFAULT 0,
    next_at            REAL NOT NULL,
    submitted_at       TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    PRIMARY KEY (org, invoice_id)
);
CREATE INDEX IF NOT EXISTS einvoices_due ON einvoices (state, next_at);
CREATE INDEX IF NOT EXISTS einvoices_sha256 ON einvoices (org, sha256);
"""


@dataclass(frozen=True)
class Einvoice:
    org: str
    invoice_id: str
    sha256: str
    state: str
    einvoicing_status: str | None
    lifecycle: tuple[tuple[int, str], ...]  # (code, when), oldest first
    detail: str | None
    attempts: int
    checks: int
    next_at: float
    submitted_at: str | None

    @property
    def codes(self) -> list[int]:
        return [code for code, _ in self.lifecycle]


@dataclass(frozen=True)
class Record:
    org: str
    sha256: str
    state: str
    invoice_id: str | None
    path: Path
    file_name: str
    size: int
    attempts: int
    last_error: str | None
    created_at: str
    updated_at: str
    facts: dict[str, str | None] | None = None  # what the invoice XML said, if any
    seller_key: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _path_blob(path: Path) -> bytes:
    return os.fsencode(path)


def _readonly_uri(path: Path) -> str | None:
    return path.resolve().as_uri() + "?mode=ro" if path.exists() else None


def _where(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_HINT_DAMAGED = (
    "stop the daemon, move the file away and restore it from a backup; or move it away to "
    "start a new journal (files already in done/ are not read again, and content sent again "
    "gets its existing invoice_id back from Qonto)"
)


def _open_error(path: Path, exc: sqlite3.Error) -> JournalError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return JournalError(path, f"the file is not a usable journal ({exc})", _HINT_DAMAGED)
    if code == sqlite3.SQLITE_READONLY:
        return JournalError(
            path, "the daemon may not write it",
            "give the daemon's user write access to the file and its folder",
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return JournalError(
            path, "it cannot be opened or created",
            "check that the path names a file (not a folder) in a folder the daemon's user "
            "may write",
        )
    if isinstance(exc, sqlite3.OperationalError) and _full(exc):
        return JournalError(path, str(exc), _HINT_FULL, temporary=True)
    return JournalError(path, str(exc), "check the file and its folder")


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Bring a journal of any earlier version up to SCHEMA_VERSION."""
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise JournalError(
            path, f"it was written by a newer version (schema {version}; this one knows "
            f"{SCHEMA_VERSION})", "upgrade qonto-invoice-daemon, or restore an older journal",
        )
    if version == SCHEMA_VERSION:
        return
    # One transaction: a migration cut short (full disk, power loss) leaves the
    # journal as it was, never half-migrated.
    await _run_closed(db, "BEGIN IMMEDIATE")
    try:
        steps: list[str] = []
        if version < 1:  # a new file, or 0.1.0's unversioned journal: the same tables
            steps += _statements(_SCHEMA)
        if version < 2:
            steps += _statements(_MIGRATE_TO_2)
        if version < 3:
            steps += _statements(_MIGRATE_TO_3)
        for statement in steps:
            await _run_closed(db, statement)
        await _run_closed(db, f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.commit()
    except BaseException:
        await _quietly(db.rollback())
        raise


async def _run_closed(db: aiosqlite.Connection, sql: str, *args: Any) -> None:
    """Execute and close the cursor in SQLite's own thread.

    A cursor left to the garbage collector is finalised in whichever thread
    drops it; if that is the event loop's while SQLite's thread reuses the same
    cached statement, sqlite3 fails with "bad parameter or other API misuse".
    """
    async with db.execute(sql, *args):
        pass


async def _closed(result: T) -> T:
    if isinstance(result, aiosqlite.Cursor):
        await result.close()  # in SQLite's thread (see _run_closed); rowcount stays
    return result


async def _uncancellable(work: Awaitable[T]) -> T:
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


def _statements(script: str) -> list[str]:
    # Our own DDL: no semicolons inside statements; comments end at the line.
    lines = [line.split("--")[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


EINVOICE_COUNTS = ("waiting", "submitted", "delivered", "refused")
REFUSED_CODES = frozenset({210, 213})


def einvoice_bucket(state: str, codes: Sequence[int]) -> str:
    """Which of `status`'s e-invoice counts an e-invoice falls in."""
    if state == "rejected" or REFUSED_CODES.intersection(codes):
        return "refused"
    if state == "pending":
        return "waiting"
    if any(code >= 202 for code in codes):
        return "delivered"
    return "submitted"


def _einvoice(row: sqlite3.Row) -> Einvoice:
    return Einvoice(
        org=row["org"], invoice_id=row["invoice_id"], sha256=row["sha256"], state=row["state"],
        einvoicing_status=row["einvoicing_status"],
        lifecycle=tuple((int(code), str(when)) for code, when in json.loads(row["lifecycle"])),
        detail=row["detail"], attempts=row["attempts"], checks=row["checks"],
        next_at=row["next_at"], submitted_at=row["submitted_at"],
    )


def _record(row: sqlite3.Row) -> Record:
    return Record(
        org=row["org"],
        sha256=row["sha256"],
        state=row["state"],
        invoice_id=row["invoice_id"],
        path=Path(os.fsdecode(bytes(row["path"]))),
        file_name=row["file_name"],
        size=row["size"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        facts=_facts(row),
        seller_key=row["seller_key"] if "seller_key" in row.keys() else None,  # noqa: SIM118
    )


def _facts(row: sqlite3.Row) -> dict[str, str | None] | None:
    # A journal not yet migrated (lookup beside a daemon of the previous version) has no facts.
    if "flavor" not in row.keys() or row["flavor"] is None:  # noqa: SIM118 (Row: values)
        return None
    return {
        "flavor": row["flavor"], "profile": row["profile"], "number": row["invoice_number"],
        "issue_date": row["issue_date"], "seller": row["seller"], "buyer": row["buyer"],
        "grand_total": row["grand_total"], "currency": row["currency"],
    }


_COLUMNS = ", ".join(FACT_COLUMNS)
_MARKS = ", ".join("?" * len(FACT_COLUMNS))
# A later write without facts (a move, a retry) keeps the ones recorded.
_KEEP = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in FACT_COLUMNS)


def _fact_values(invoice: Invoice | None) -> tuple[str | None, ...]:
    if invoice is None or invoice.flavor is None:
        return (None,) * len(FACT_COLUMNS)
    return (
        invoice.flavor, invoice.profile, invoice.number, invoice.type_code, invoice.issue_date,
        invoice.seller, invoice.seller_key, invoice.buyer, invoice.grand_total, invoice.currency,
    )


# PRAGMA user_version. 0: 0.1.0's unversioned journal (the v1 tables); 1: versioned;
# 2: what the invoice XML says (flavor, profile, number, seller...); 3: e-invoices.
SCHEMA_VERSION = 3
_RETRY_INITIAL_S, _RETRY_MAX_S = 1.0, 30.0
_HINT_FULL = "free space on that filesystem; the daemon waits and carries on by itself"


def _full(exc: sqlite3.Error) -> bool:
    """A write refused for lack of space (or an I/O error): wait and try again."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or (
        code is not None and code & 0xFF == sqlite3.SQLITE_IOERR
    ) or "disk is full" in str(exc)


async def _quietly(step: Awaitable[object]) -> None:
    with contextlib.suppress(sqlite3.Error, ValueError):
        await step


class Journal:
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
    async def open(cls, path: Path) -> Journal:
        """Open (or create) the journal; JournalError says what is wrong and what to do."""
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                path, f"cannot create its folder: {exc.strerror or exc}",
                "create the folder, or let systemd make it (StateDirectory=)",
                temporary=exc.errno in (errno.ENOSPC, errno.EDQUOT),
            ) from None
        existed = await asyncio.to_thread(path.exists)
        try:
            db = await aiosqlite.connect(path)
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from None
        try:
            db.row_factory = sqlite3.Row
            await _run_closed(db, "PRAGMA busy_timeout = 10000")
            async with db.execute("PRAGMA quick_check") as cur:
                row = await cur.fetchone()
            if row is None or row[0] != "ok":
                raise JournalError(
                    path, f"the file is damaged (quick_check: {row[0] if row else 'no answer'})",
                    _HINT_DAMAGED,
                )
            await _run_closed(db, "PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before we move a file because of it.
            await _run_closed(db, "PRAGMA synchronous = FULL")
            await _migrate(db, path)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise _open_error(path, exc) from None
            raise
        journal = cls(db, path)
        journal._where = await asyncio.to_thread(_where, path)
        if not existed:
            log.info("journal_created", path=path)
        return journal

    async def in_place(self) -> bool:
        """Whether the file at the journal's path is still the one this daemon writes to."""
        if self.path is None:
            return True
        return await asyncio.to_thread(_where, self.path) == self._where

    async def _write(self, statements: Callable[[], Awaitable[T]], *, wait: bool = True) -> T:
        """Run `statements` in the open transaction; with `wait`, return once committed."""
        result, done = await _uncancellable(self._execute(statements))
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
            await _uncancellable(self._commit_unless(done))
        done.result()  # raises if the transaction was lost

    async def _commit_unless(self, done: asyncio.Future[None]) -> None:
        async with self._lock:
            if not done.done():  # else a commit since took these statements along
                await self._commit()

    async def _run(self, statements: Callable[[], Awaitable[T]]) -> T:
        """One writer's statements (under the lock); a full disk is waited out."""
        while True:
            try:
                return await _closed(await statements())
            except sqlite3.OperationalError as exc:
                # The whole transaction may be gone: put back the others' statements.
                await self._recover(exc)
                if not _full(exc):
                    raise

    async def _commit(self) -> None:
        """Commit the open transaction (under the lock); a full disk is waited out."""
        while True:
            try:
                await self._db.commit()
            except sqlite3.OperationalError as exc:
                if not _full(exc):
                    await _quietly(self._db.rollback())
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
            await _quietly(self._db.rollback())
            if _full(exc):
                if self.stopping.is_set():
                    error = JournalUnavailable(f"{self.path}: {exc}")
                    self._end_tx(error)
                    raise error from None
                if not self._unavailable:
                    self._unavailable = True
                    log.error(
                        "journal_unavailable", path=self.path, error=str(exc),
                        hint=_HINT_FULL + " (meanwhile no file is taken or sent)",
                    )
                if not await wait_event(self.stopping, delay_s):
                    delay_s = min(delay_s * 2, _RETRY_MAX_S)
            try:
                for statements in self._tx:
                    await _closed(await statements())
            except sqlite3.OperationalError as again:
                exc = again
                if not _full(exc):
                    # Nothing of this transaction may be committed by the next writer.
                    await _quietly(self._db.rollback())
                    self._end_tx(JournalUnavailable(f"{self.path}: {exc}"))
                    raise
                continue
            return

    @classmethod
    async def open_readonly(cls, path: Path) -> Journal | None:
        """For `lookup` beside a running daemon; None when there is no journal yet."""
        uri = await asyncio.to_thread(_readonly_uri, path)
        if uri is None:
            return None
        try:
            db = await aiosqlite.connect(uri, uri=True)
            db.row_factory = sqlite3.Row
            await _run_closed(db, "PRAGMA busy_timeout = 10000")
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from None
        return cls(db, path)

    async def close(self) -> None:
        if self._tx_done is not None:
            with contextlib.suppress(sqlite3.Error, JournalUnavailable):
                await self.flush()
        await self._db.close()

    # Reads take one trip to SQLite's thread (execute_fetchall): the intake's
    # decisions run one at a time, and each trip is on that path.

    async def get(self, org: str, sha256: str) -> Record | None:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM invoices WHERE org = ? AND sha256 = ?", (org, sha256)
        )
        return next((_record(r) for r in rows), None)

    async def find(self, sha256: str) -> list[Record]:
        """Every organization's row for this content."""
        async with self._db.execute(
            "SELECT * FROM invoices WHERE sha256 = ? ORDER BY updated_at DESC", (sha256,)
        ) as cur:
            rows = await cur.fetchall()
        return [_record(r) for r in rows]

    async def in_state(self, *states: str) -> list[Record]:
        marks = ",".join("?" * len(states))
        async with self._db.execute(
            f"SELECT * FROM invoices WHERE state IN ({marks}) ORDER BY created_at", states
        ) as cur:
            rows = await cur.fetchall()
        return [_record(r) for r in rows]

    async def enqueue(
        self,
        org: str,
        sha256: str,
        path: Path,
        file_name: str,
        size: int,
        invoice: Invoice | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Queue content for upload (a row already imported or done is left as it is).

        Content that failed before is queued again: someone dropped it on
        purpose, and the reason may have gone. The intake does not wait for the
        commit (`wait=False`): a queued row only matters once the file is sent,
        and the commit of the answer's invoice_ids takes it along.
        """
        now = _now()
        await self._write(lambda: self._db.execute(
            f"""
            INSERT INTO invoices (org, sha256, state, path, file_name, size, created_at, updated_at,
                                  {_COLUMNS})
            VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, {_MARKS})
            ON CONFLICT (org, sha256) DO UPDATE SET
                state = 'queued', path = excluded.path, file_name = excluded.file_name,
                size = excluded.size, updated_at = excluded.updated_at,
                attempts = CASE WHEN state = 'failed' THEN 0 ELSE attempts END, {_KEEP}
            WHERE state IN ('queued', 'sending', 'failed')
            """,
            (org, sha256, _path_blob(path), file_name, size, now, now, *_fact_values(invoice)),
        ), wait=wait)

    async def mark_sending(self, org: str, sha256s: Sequence[str]) -> None:
        """For `status` and the start-up's bookkeeping; a request never waits for its commit."""
        now = _now()
        await self._write(lambda: self._db.executemany(
            "UPDATE invoices SET state = 'sending', attempts = attempts + 1, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('queued', 'sending')",
            [(now, org, sha) for sha in sha256s],
        ), wait=False)

    async def note_error(self, org: str, sha256s: Iterable[str], error: str) -> None:
        """Remember why the last attempt did not succeed; the rows stay queued."""
        now = _now()
        rows = [(error, now, org, sha) for sha in sha256s]
        await self._write(lambda: self._db.executemany(
            "UPDATE invoices SET state = 'queued', last_error = ?, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('queued', 'sending')",
            rows,
        ))

    async def record_imported(
        self, org: str, invoice_ids: dict[str, str], *, einvoice: Iterable[str] = ()
    ) -> None:
        """Store sha256 -> invoice_id for a whole answer in one transaction.

        The invoices whose sha256 is in `einvoice` are to be sent by e-invoice:
        that intent is committed with the invoice_id, so a crash cannot lose it.
        """
        now = _now()
        send = [(org, invoice_ids[sha], sha, time.time(), now, now) for sha in einvoice]

        async def statements() -> None:
            cur = await _closed(await self._db.executemany(
                "UPDATE invoices SET state = 'imported', invoice_id = ?, last_error = NULL, "
                "updated_at = ? WHERE org = ? AND sha256 = ?",
                [(invoice_id, now, org, sha) for sha, invoice_id in invoice_ids.items()],
            ))
            if cur.rowcount != len(invoice_ids):
                # Their queued rows were lost with a failed transaction: nothing may
                # be filed as imported (the files stay, and are sent again: same ids).
                raise JournalUnavailable(
                    f"{self.path}: {len(invoice_ids) - cur.rowcount} queued row(s) missing"
                )
            if send:
                await _closed(await self._db.executemany(
                    "INSERT INTO einvoices (org, invoice_id, sha256, state, next_at, created_at, "
                    "updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?) "
                    "ON CONFLICT (org, invoice_id) DO NOTHING",
                    send,
                ))

        await self._write(statements)

    # -- e-invoices -------------------------------------------------------------------

    async def einvoices_due(
        self, orgs: Sequence[str], now: float, limit: int = 100
    ) -> list[Einvoice]:
        """These organizations' pending and submitted e-invoices whose time has come,
        the most overdue first."""
        marks = ",".join("?" * len(orgs))
        rows = await self._db.execute_fetchall(
            f"SELECT * FROM einvoices WHERE state IN ('pending', 'submitted') AND next_at <= ? "
            f"AND org IN ({marks}) ORDER BY next_at LIMIT ?", (now, *orgs, limit),
        )
        return [_einvoice(r) for r in rows]

    async def next_einvoice_at(self, orgs: Sequence[str]) -> float | None:
        marks = ",".join("?" * len(orgs))
        rows = await self._db.execute_fetchall(
            f"SELECT min(next_at) FROM einvoices WHERE state IN ('pending', 'submitted') "
            f"AND org IN ({marks})", tuple(orgs),
        )
        return next((r[0] for r in rows if r[0] is not None), None)

    async def einvoices_of(self, org: str, sha256: str) -> list[Einvoice]:
        try:
            rows = await self._db.execute_fetchall(
                "SELECT * FROM einvoices WHERE org = ? AND sha256 = ?", (org, sha256)
            )
        except sqlite3.OperationalError:  # `lookup` beside a daemon of the previous version
            return []
        return [_einvoice(r) for r in rows]

    async def update_einvoice(self, e: Einvoice, **changes: object) -> Einvoice:
        """Store the new state of an e-invoice (durably: it says what was sent)."""
        new = replace(e, **changes)  # type: ignore[arg-type]
        await self._write(lambda: self._db.execute(
            "UPDATE einvoices SET state = ?, einvoicing_status = ?, lifecycle = ?, detail = ?, "
            "attempts = ?, checks = ?, next_at = ?, submitted_at = ?, updated_at = ? "
            "WHERE org = ? AND invoice_id = ?",
            (new.state, new.einvoicing_status, json.dumps([list(x) for x in new.lifecycle]),
             new.detail, new.attempts, new.checks, new.next_at, new.submitted_at, _now(),
             new.org, new.invoice_id),
        ))
        return new

    async def einvoice_counts(self) -> dict[str, dict[str, int]]:
        """Per organization: waiting, submitted, delivered (202 or later), refused."""
        try:
            rows = await self._db.execute_fetchall("SELECT org, state, lifecycle FROM einvoices")
        except sqlite3.OperationalError:  # `status` beside a daemon of the previous version
            return {}
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            counts = out.setdefault(row[0], dict.fromkeys(EINVOICE_COUNTS, 0))
            codes = [int(c) for c, _ in json.loads(row[2])]
            counts[einvoice_bucket(row[1], codes)] += 1
        return out

    async def retry_einvoices(self, org: str | None = None, sha256: str | None = None) -> int:
        """Rejected e-invoices (all, or one file's) become pending again; how many."""
        where, args = "state = 'rejected'", []
        if org is not None and sha256 is not None:
            where += " AND org = ? AND sha256 = ?"
            args = [org, sha256]
        cur = await self._write(lambda: self._db.execute(
            f"UPDATE einvoices SET state = 'pending', attempts = 0, detail = NULL, next_at = ?, "
            f"updated_at = ? WHERE {where}", (time.time(), _now(), *args),
        ))
        return int(cur.rowcount)

    async def mark_done(self, org: str, sha256: str, path: Path) -> None:
        """Where the file went. Not waited for: after a crash, the start-up finds
        the file in done/ and the row imported, and says the same."""
        now = _now()
        await self._write(lambda: self._db.execute(
            "UPDATE invoices SET state = 'done', path = ?, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('imported', 'done')",
            (_path_blob(path), now, org, sha256),
        ), wait=False)

    async def mark_failed(
        self,
        org: str,
        sha256: str,
        path: Path,
        file_name: str,
        size: int,
        error: str,
        invoice: Invoice | None = None,
    ) -> None:
        """Record a rejection. Content already imported keeps its invoice_id."""
        now = _now()
        await self._write(lambda: self._db.execute(
            f"""
            INSERT INTO invoices (org, sha256, state, path, file_name, size, last_error,
                                  created_at, updated_at, {_COLUMNS})
            VALUES (?, ?, 'failed', ?, ?, ?, ?, ?, ?, {_MARKS})
            ON CONFLICT (org, sha256) DO UPDATE SET
                state = 'failed', path = excluded.path, file_name = excluded.file_name,
                last_error = excluded.last_error, updated_at = excluded.updated_at, {_KEEP}
            WHERE state NOT IN ('imported', 'done')
            """,
            (org, sha256, _path_blob(path), file_name, size, error, now, now,
             *_fact_values(invoice)),
        ))

    async def find_number(
        self, org: str, seller_key: str, number: str, type_code: str | None, *, other_than: str
    ) -> Record | None:
        """Another content of this organization with this (seller, document type, number).

        Rows that failed do not count: that invoice never reached Qonto.
        """
        rows = await self._db.execute_fetchall(
            "SELECT * FROM invoices WHERE org = ? AND seller_key = ? AND invoice_number = ? "
            "AND type_code IS ? AND sha256 != ? "
            "AND state IN ('queued', 'sending', 'imported', 'done') "
            "ORDER BY created_at LIMIT 1",
            (org, seller_key, number, type_code, other_than),
        )
        return next((_record(r) for r in rows), None)

    async def requeue_interrupted(self) -> int:
        """After a restart, batches that were in flight are simply queued again."""
        now = _now()
        cur = await self._write(lambda: self._db.execute(
            "UPDATE invoices SET state = 'queued', updated_at = ? WHERE state = 'sending'",
            (now,),
        ))
        return cur.rowcount

    async def note_org(
        self,
        org: str,
        *,
        paused: bool | None = None,
        reason: str | None = None,
        success: bool = False,
        error: str | None = None,
    ) -> None:
        """What `status` shows of an organization: paused and why, last success, last error.

        Not waited for: it is bookkeeping for people, made durable by the next commit.
        """
        now = _now()
        await self._write(lambda: self._db.execute(
            """
            INSERT INTO organizations (org, paused, paused_reason, last_success_at, last_error,
                                       last_error_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (org) DO UPDATE SET
                paused = COALESCE(excluded.paused, paused),
                paused_reason = CASE WHEN excluded.paused IS NULL THEN paused_reason
                                     ELSE excluded.paused_reason END,
                last_success_at = COALESCE(excluded.last_success_at, last_success_at),
                last_error = COALESCE(excluded.last_error, last_error),
                last_error_at = COALESCE(excluded.last_error_at, last_error_at),
                updated_at = excluded.updated_at
            """,
            (org, None if paused is None else int(paused), reason if paused else None,
             now if success else None, error, now if error else None, now),
        ), wait=False)

    async def organizations(self) -> dict[str, dict[str, object]]:
        try:
            async with self._db.execute("SELECT * FROM organizations") as cur:
                rows = await cur.fetchall()
        except sqlite3.OperationalError:  # a journal from before the table
            return {}
        return {
            r["org"]: {
                "paused": bool(r["paused"]), "paused_reason": r["paused_reason"],
                "last_success_at": r["last_success_at"], "last_error": r["last_error"],
                "last_error_at": r["last_error_at"],
            }
            for r in rows
        }

    async def refresh_token(self, org: str) -> tuple[str, str] | None:
        """(the newest refresh token, sha256 of the configured one it descends from)."""
        async with self._db.execute(
            "SELECT refresh_token, configured FROM oauth_tokens WHERE org = ?", (org,)
        ) as cur:
            row = await cur.fetchone()
        return (row["refresh_token"], row["configured"]) if row else None

    async def store_refresh_token(self, org: str, token: str, configured: str) -> None:
        """Committed (synchronous=FULL) before the new access token is used."""
        now = _now()
        await self._write(lambda: self._db.execute(
            "INSERT INTO oauth_tokens (org, refresh_token, configured, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
            "refresh_token = excluded.refresh_token, configured = excluded.configured, "
            "updated_at = excluded.updated_at",
            (org, token, configured, now),
        ))

    async def places(self) -> list[tuple[str, str, Path]]:
        """(org, state, path) of every row: `status` counts them per folder."""
        async with self._db.execute("SELECT org, state, path FROM invoices") as cur:
            rows = await cur.fetchall()
        return [(r["org"], r["state"], Path(os.fsdecode(bytes(r["path"])))) for r in rows]

    async def counts(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT state, COUNT(*) AS n FROM invoices GROUP BY state"
        ) as cur:
            rows = await cur.fetchall()
        return {r["state"]: r["n"] for r in rows}
