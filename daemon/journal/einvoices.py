"""The `einvoices` table: imported invoices sent by e-invoice, and what Qonto says since.

What the states and lifecycle codes mean for a person lives in flow/einvoice.py;
this module stores them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from .commits import Store
from .sql import now_iso


class EinvoiceState(StrEnum):
    """pending (to send) -> submitted (accepted, tracked) -> final; rejected (refused)."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    FINAL = "final"


@dataclass(frozen=True)
class Einvoice:
    org: str
    invoice_id: str
    sha256: str
    state: EinvoiceState
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


def _einvoice(row: sqlite3.Row) -> Einvoice:
    return Einvoice(
        org=row["org"], invoice_id=row["invoice_id"], sha256=row["sha256"],
        state=EinvoiceState(row["state"]),
        einvoicing_status=row["einvoicing_status"],
        lifecycle=tuple((int(code), str(when)) for code, when in json.loads(row["lifecycle"])),
        detail=row["detail"], attempts=row["attempts"], checks=row["checks"],
        next_at=row["next_at"], submitted_at=row["submitted_at"],
    )


class Einvoices(Store):
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
             new.detail, new.attempts, new.checks, new.next_at, new.submitted_at, now_iso(),
             new.org, new.invoice_id),
        ))
        return new

    async def einvoice_summaries(self) -> list[tuple[str, EinvoiceState, list[int]]]:
        """(org, state, lifecycle codes) of every e-invoice, for `status`'s counts."""
        try:
            rows = await self._db.execute_fetchall("SELECT org, state, lifecycle FROM einvoices")
        except sqlite3.OperationalError:  # `status` beside a daemon of the previous version
            return []
        return [
            (row[0], EinvoiceState(row[1]), [int(c) for c, _ in json.loads(row[2])])
            for row in rows
        ]

    async def retry_einvoices(self, org: str | None = None, sha256: str | None = None) -> int:
        """Rejected e-invoices (all, or one file's) become pending again; how many."""
        where, args = "state = 'rejected'", []
        if org is not None and sha256 is not None:
            where += " AND org = ? AND sha256 = ?"
            args = [org, sha256]
        cur = await self._write(lambda: self._db.execute(
            f"UPDATE einvoices SET state = 'pending', attempts = 0, detail = NULL, next_at = ?, "
            f"updated_at = ? WHERE {where}", (time.time(), now_iso(), *args),
        ))
        return int(cur.rowcount)
