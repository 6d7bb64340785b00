"""The `invoices` table: one row per (organization, sha256), the file's content.

A row's state moves queued -> sending -> imported -> done, or to failed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import JournalUnavailable
from ..invoice_xml import Invoice
from .commits import Store
from .schema import FACT_COLUMNS
from .sql import blob_path, closed, now_iso, path_blob


class State(StrEnum):
    """Where a content stands (stored as these words)."""

    QUEUED = "queued"
    SENDING = "sending"
    IMPORTED = "imported"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Record:
    org: str
    sha256: str
    state: State
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
    trace_id: str | None = None  # Qonto's, with the last error
    rules: dict[str, object] | None = None  # the business rules' report, when they ran



def _record(row: sqlite3.Row) -> Record:
    return Record(
        org=row["org"],
        sha256=row["sha256"],
        state=State(row["state"]),
        invoice_id=row["invoice_id"],
        path=blob_path(row["path"]),
        file_name=row["file_name"],
        size=row["size"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        facts=_facts(row),
        seller_key=row["seller_key"] if "seller_key" in row.keys() else None,  # noqa: SIM118
        trace_id=row["trace_id"] if "trace_id" in row.keys() else None,  # noqa: SIM118
        rules=_rules(row),
    )


def _rules(row: sqlite3.Row) -> dict[str, object] | None:
    if "rules" not in row.keys() or not row["rules"]:  # noqa: SIM118 (Row: values)
        return None
    try:
        found = json.loads(row["rules"])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _facts(row: sqlite3.Row) -> dict[str, str | None] | None:
    # A journal not yet migrated (lookup beside a daemon of the previous version) has no facts.
    if "flavor" not in row.keys() or row["flavor"] is None:  # noqa: SIM118 (Row: values)
        return None
    return {
        "flavor": row["flavor"], "profile": row["profile"], "number": row["invoice_number"],
        "issue_date": row["issue_date"], "seller": row["seller"], "buyer": row["buyer"],
        "grand_total": row["grand_total"], "currency": row["currency"],
    }


# What the invoice XML says, and what the business rules said of it.
_WRITTEN = (*FACT_COLUMNS, "rules")
_COLUMNS = ", ".join(_WRITTEN)
_MARKS = ", ".join("?" * len(_WRITTEN))
# A later write without facts (a move, a retry) keeps the ones recorded.
_KEEP = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in _WRITTEN)


def _fact_values(invoice: Invoice | None) -> tuple[str | None, ...]:
    if invoice is None or invoice.flavor is None:
        return (None,) * len(_WRITTEN)
    return (
        invoice.flavor, invoice.profile, invoice.number, invoice.type_code, invoice.issue_date,
        invoice.seller, invoice.seller_key, invoice.buyer, invoice.grand_total, invoice.currency,
        invoice.rules,
    )


class Invoices(Store):
    """What the journal knows of each content: its state, its file, its invoice_id."""

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

    async def by_invoice_id(self, org: str, invoice_id: str) -> Record | None:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM invoices WHERE org = ? AND invoice_id = ?", (org, invoice_id)
        )
        return next((_record(r) for r in rows), None)

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
        now = now_iso()
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
            (org, sha256, path_blob(path), file_name, size, now, now, *_fact_values(invoice)),
        ), wait=wait)

    async def mark_sending(self, org: str, sha256s: Sequence[str]) -> None:
        """For `status` and the start-up's bookkeeping; a request never waits for its commit."""
        now = now_iso()
        await self._write(lambda: self._db.executemany(
            "UPDATE invoices SET state = 'sending', attempts = attempts + 1, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('queued', 'sending')",
            [(now, org, sha) for sha in sha256s],
        ), wait=False)

    async def note_error(
        self, org: str, sha256s: Iterable[str], error: str, trace_id: str | None = None
    ) -> None:
        """Remember why the last attempt did not succeed (and Qonto's trace_id); the
        rows stay queued."""
        now = now_iso()
        rows = [(error, trace_id, now, org, sha) for sha in sha256s]
        await self._write(lambda: self._db.executemany(
            "UPDATE invoices SET state = 'queued', last_error = ?, trace_id = ?, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('queued', 'sending')",
            rows,
        ))

    async def record_imported(
        self, org: str, invoice_ids: dict[str, str], *, einvoice: Mapping[str, Path] | None = None
    ) -> None:
        """Store sha256 -> invoice_id for a whole answer in one transaction.

        The invoices whose sha256 is in `einvoice` (with the file they come from)
        are to be sent by e-invoice: that intent is committed with the invoice_id,
        so a crash cannot lose it.
        """
        now = now_iso()
        send = [(org, invoice_ids[sha], sha, time.time(), path_blob(path), now, now)
                for sha, path in (einvoice or {}).items()]

        async def statements() -> None:
            cur = await closed(await self._db.executemany(
                "UPDATE invoices SET state = 'imported', invoice_id = ?, last_error = NULL, "
                "trace_id = NULL, updated_at = ? WHERE org = ? AND sha256 = ?",
                [(invoice_id, now, org, sha) for sha, invoice_id in invoice_ids.items()],
            ))
            if cur.rowcount != len(invoice_ids):
                # Their queued rows were lost with a failed transaction: nothing may
                # be filed as imported (the files stay, and are sent again: same ids).
                raise JournalUnavailable(
                    f"{self.path}: {len(invoice_ids) - cur.rowcount} queued row(s) missing"
                )
            if send:
                await closed(await self._db.executemany(
                    "INSERT INTO einvoices (org, invoice_id, sha256, state, next_at, path, "
                    "created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) "
                    "ON CONFLICT (org, invoice_id) DO NOTHING",
                    send,
                ))

        await self._write(statements)

    # -- e-invoices -------------------------------------------------------------------

    async def mark_done(self, org: str, sha256: str, path: Path) -> None:
        """Where the file went. Not waited for: after a crash, the start-up finds
        the file in done/ and the row imported, and says the same."""
        now = now_iso()
        await self._write(lambda: self._db.execute(
            "UPDATE invoices SET state = 'done', path = ?, updated_at = ? "
            "WHERE org = ? AND sha256 = ? AND state IN ('imported', 'done')",
            (path_blob(path), now, org, sha256),
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
        trace_id: str | None = None,
    ) -> None:
        """Record a rejection. Content already imported keeps its invoice_id."""
        now = now_iso()
        await self._write(lambda: self._db.execute(
            f"""
            INSERT INTO invoices (org, sha256, state, path, file_name, size, last_error,
                                  trace_id, created_at, updated_at, {_COLUMNS})
            VALUES (?, ?, 'failed', ?, ?, ?, ?, ?, ?, ?, {_MARKS})
            ON CONFLICT (org, sha256) DO UPDATE SET
                state = 'failed', path = excluded.path, file_name = excluded.file_name,
                last_error = excluded.last_error, trace_id = excluded.trace_id,
                updated_at = excluded.updated_at, {_KEEP}
            WHERE state NOT IN ('imported', 'done')
            """,
            (org, sha256, path_blob(path), file_name, size, error, trace_id, now, now,
             *_fact_values(invoice)),
        ))

    async def find_numbers(
        self, org: str, seller_key: str, number: str, type_code: str | None, *, other_than: str
    ) -> list[Record]:
        """Every other content of this organization with this (seller, document type,
        number), oldest first; rows that failed do not count."""
        rows = await self._db.execute_fetchall(
            "SELECT * FROM invoices WHERE org = ? AND seller_key = ? AND invoice_number = ? "
            "AND type_code IS ? AND sha256 != ? "
            "AND state IN ('queued', 'sending', 'imported', 'done') ORDER BY created_at",
            (org, seller_key, number, type_code, other_than),
        )
        return [_record(r) for r in rows]

    async def requeue_interrupted(self) -> int:
        """After a restart, batches that were in flight are simply queued again."""
        now = now_iso()
        cur = await self._write(lambda: self._db.execute(
            "UPDATE invoices SET state = 'queued', updated_at = ? WHERE state = 'sending'",
            (now,),
        ))
        return cur.rowcount

    async def places(self) -> list[tuple[str, str, Path]]:
        """(org, state, path) of every row: `status` counts them per folder."""
        async with self._db.execute("SELECT org, state, path FROM invoices") as cur:
            rows = await cur.fetchall()
        return [(r["org"], r["state"], blob_path(r["path"])) for r in rows]

    async def counts(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT state, COUNT(*) AS n FROM invoices GROUP BY state"
        ) as cur:
            rows = await cur.fetchall()
        return {r["state"]: r["n"] for r in rows}
