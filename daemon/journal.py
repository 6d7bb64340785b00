"""The journal: a SQLite file that is the durable truth about every file's content.

One row per (organization, sha256). A row's state moves
queued -> sending -> imported -> done, or to failed. The invoice_id is
committed (synchronous=FULL, so it survives power loss) before the file is
moved; everything after a crash is re-derived from these rows and the folders.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _path_blob(path: Path) -> bytes:
    return os.fsencode(path)


def _readonly_uri(path: Path) -> str | None:
    return path.resolve().as_uri() + "?mode=ro" if path.exists() else None


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
    )


class Journal:
    """One long-lived aiosqlite connection; open with `await Journal.open(path)`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Journal:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            db.row_factory = sqlite3.Row
            await db.execute("PRAGMA busy_timeout = 10000")
            await db.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before we move a file because of it.
            await db.execute("PRAGMA synchronous = FULL")
            await db.executescript(_SCHEMA)
            await db.commit()
        except BaseException:
            await db.close()
            raise
        return cls(db)

    @classmethod
    async def open_readonly(cls, path: Path) -> Journal | None:
        """For `lookup` beside a running daemon; None when there is no journal yet."""
        uri = await asyncio.to_thread(_readonly_uri, path)
        if uri is None:
            return None
        db = await aiosqlite.connect(uri, uri=True)
        db.row_factory = sqlite3.Row
        await db.execute("PRAGMA busy_timeout = 10000")
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def get(self, org: str, sha256: str) -> Record | None:
        async with self._db.execute(
            "SELECT * FROM invoices WHERE org = ? AND sha256 = ?", (org, sha256)
        ) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

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

    async def enqueue(self, org: str, sha256: str, path: Path, file_name: str, size: int) -> Record:
        """Queue content for upload, or return the row that says it is already handled.

        Content that failed before is queued again: someone dropped it on
        purpose, and the reason may have gone.
        """
        now = _now()
        await self._db.execute(
            """
            INSERT INTO invoices (org, sha256, state, path, file_name, size, created_at, updated_at)
            VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)
            ON CONFLICT (org, sha256) DO UPDATE SET
                state = 'queued', path = excluded.path, file_name = excluded.file_name,
                size = excluded.size, updated_at = excluded.updated_at,
                attempts = CASE WHEN state = 'failed' THEN 0 ELSE attempts END
            WHERE state IN ('queued', 'sending', 'failed')
            """,
            (org, sha256, _path_blob(path), file_name, size, now, now),
        )
        await self._db.commit()
        record = await self.get(org, sha256)
        assert record is not None
        return record

    async def mark_sending(self, org: str, sha256s: Sequence[str]) -> None:
        now = _now()
        await self._db.executemany(
            "UPDATE invoices SET state = 'sending', attempts = attempts + 1, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('queued', 'sending')",
            [(now, org, sha) for sha in sha256s],
        )
        await self._db.commit()

    async def note_error(self, org: str, sha256s: Iterable[str], error: str) -> None:
        """Remember why the last attempt did not succeed; the rows stay queued."""
        now = _now()
        await self._db.executemany(
            "UPDATE invoices SET state = 'queued', last_error = ?, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('queued', 'sending')",
            [(error, now, org, sha) for sha in sha256s],
        )
        await self._db.commit()

    async def record_imported(self, org: str, invoice_ids: dict[str, str]) -> None:
        """Store sha256 -> invoice_id for a whole answer in one transaction."""
        now = _now()
        await self._db.executemany(
            "UPDATE invoices SET state = 'imported', invoice_id = ?, last_error = NULL, "
            "updated_at = ? WHERE org = ? AND sha256 = ?",
            [(invoice_id, now, org, sha) for sha, invoice_id in invoice_ids.items()],
        )
        await self._db.commit()

    async def mark_done(self, org: str, sha256: str, path: Path) -> None:
        await self._db.execute(
            "UPDATE invoices SET state = 'done', path = ?, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('imported', 'done')",
            (_path_blob(path), _now(), org, sha256),
        )
        await self._db.commit()

    async def mark_failed(
        self, org: str, sha256: str, path: Path, file_name: str, size: int, error: str
    ) -> None:
        """Record a rejection. Content already imported keeps its invoice_id."""
        now = _now()
        await self._db.execute(
            """
            INSERT INTO invoices (org, sha256, state, path, file_name, size, last_error,
                                  created_at, updated_at)
            VALUES (?, ?, 'failed', ?, ?, ?, ?, ?, ?)
            ON CONFLICT (org, sha256) DO UPDATE SET
                state = 'failed', path = excluded.path, file_name = excluded.file_name,
                last_error = excluded.last_error, updated_at = excluded.updated_at
            WHERE state NOT IN ('imported', 'done')
            """,
            (org, sha256, _path_blob(path), file_name, size, error, now, now),
        )
        await self._db.commit()

    async def requeue_interrupted(self) -> int:
        """After a restart, batches that were in flight are simply queued again."""
        cur = await self._db.execute(
            "UPDATE invoices SET state = 'queued', updated_at = ? WHERE state = 'sending'",
            (_now(),),
        )
        await self._db.commit()
        return cur.rowcount

    async def counts(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT state, COUNT(*) AS n FROM invoices GROUP BY state"
        ) as cur:
            rows = await cur.fetchall()
        return {r["state"]: r["n"] for r in rows}
