"""The journal's tables and their migrations: `PRAGMA user_version` says which are there.

Every version a released daemon wrote is migrated forward in one transaction,
so a migration cut short (a full disk, power loss) leaves the journal as it was.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiosqlite

from ..errors import JournalError
from .sql import HINT_FULL, full, quietly, run_closed

SCHEMA_V1 = """
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
MIGRATE_TO_2 = "".join(f"ALTER TABLE invoices ADD COLUMN {c} TEXT;\n" for c in FACT_COLUMNS) + (
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
MIGRATE_TO_3 = """
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


# 4: e-invoices as Qonto answers: each lifecycle event an object with its own time
# and reason; an e-invoice held (for its organization or its client); the file an
# e-invoice was asked for; Qonto's trace_id with the last error; since when an
# organization's Qonto has not answered (for `status --check`).
MIGRATE_TO_4 = """
ALTER TABLE einvoices ADD COLUMN held_for TEXT;
ALTER TABLE einvoices ADD COLUMN client_id TEXT;
ALTER TABLE einvoices ADD COLUMN path BLOB;
ALTER TABLE einvoices ADD COLUMN trace_id TEXT;
ALTER TABLE invoices ADD COLUMN trace_id TEXT;
ALTER TABLE organizations ADD COLUMN unreachable_since TEXT;
"""

# 5: what the business rules (EN 16931, Factur-X, BR-FR) said of each invoice, JSON.
MIGRATE_TO_5 = """
ALTER TABLE invoices ADD COLUMN rules TEXT;
"""
# PRAGMA user_version. 0: 0.1.0's unversioned journal (the v1 tables); 1: versioned;
# 2: what the invoice XML says (flavor, profile, number, seller...); 3: e-invoices;
# 4: e-invoice events with their time and reason, held e-invoices, trace_ids;
# 5: the business rules' findings.
SCHEMA_VERSION = 5
HINT_DAMAGED = (
    "stop the daemon, move the file away and restore it from a backup; or move it away to "
    "start a new journal (files already in done/ are not read again, and content sent again "
    "gets its existing invoice_id back from Qonto)"
)


def open_error(path: Path, exc: sqlite3.Error) -> JournalError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return JournalError(path, f"the file is not a usable journal ({exc})", HINT_DAMAGED)
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
    if isinstance(exc, sqlite3.OperationalError) and full(exc):
        return JournalError(path, str(exc), HINT_FULL, temporary=True)
    return JournalError(path, str(exc), "check the file and its folder")


async def migrate(db: aiosqlite.Connection, path: Path) -> None:
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
    await run_closed(db, "BEGIN IMMEDIATE")
    try:
        steps: list[str] = []
        if version < 1:  # a new file, or 0.1.0's unversioned journal: the same tables
            steps += statements(SCHEMA_V1)
        if version < 2:
            steps += statements(MIGRATE_TO_2)
        if version < 3:
            steps += statements(MIGRATE_TO_3)
        if version < 4:
            steps += statements(MIGRATE_TO_4)
        if version < 5:
            steps += statements(MIGRATE_TO_5)
        for statement in steps:
            await run_closed(db, statement)
        if 0 < version < 4:
            await _events_as_objects(db)
        await run_closed(db, f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.commit()
    except BaseException:
        await quietly(db.rollback())
        raise


def statements(script: str) -> list[str]:
    # Our own DDL: no semicolons inside statements; comments end at the line.
    lines = [line.split("--")[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def _events_as_objects(db: aiosqlite.Connection) -> None:
    """v3 kept each lifecycle event as [code, when]; v4 as Qonto sends it, an object.

    v3's `when` was the time of the daemon's look, never Qonto's `timestamp`: it is
    dropped (null), so that the next look recognises these events by their code and
    gives them their own time, instead of taking them for new ones.
    """
    async with db.execute("SELECT rowid, lifecycle FROM einvoices") as cur:
        rows = await cur.fetchall()
    for rowid, lifecycle in rows:
        events = [
            {"code": code, "at": None, "reason": None, "reason_message": None}
            for code, _ in json.loads(lifecycle)
        ]
        await run_closed(
            db, "UPDATE einvoices SET lifecycle = ? WHERE rowid = ?", (json.dumps(events), rowid)
        )
