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
from pathlib import Path

from .commits import Store
from .sql import blob_path, now_iso, path_blob


class EinvoiceState(StrEnum):
    """pending (to send) -> submitted (accepted, tracked) -> final; held (waiting for
    its organization or its client, checked again); rejected (refused for good)."""

    PENDING = "pending"
    HELD = "held"
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    FINAL = "final"


# Looked at by the running daemon: to send, to send once possible, to follow.
OPEN_STATES = (EinvoiceState.PENDING, EinvoiceState.HELD, EinvoiceState.SUBMITTED)


@dataclass(frozen=True)
class Event:
    """One lifecycle event as Qonto sent it: its code (an int when it reads as one,
    else the text as it came), its own time, and why (refusals, rejections)."""

    code: int | str
    at: str | None
    reason: str | None = None
    reason_message: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"code": self.code, "at": self.at, "reason": self.reason,
                "reason_message": self.reason_message}


@dataclass(frozen=True)
class Einvoice:
    org: str
    invoice_id: str
    sha256: str
    state: EinvoiceState
    einvoicing_status: str | None
    events: tuple[Event, ...]  # oldest first
    detail: str | None
    attempts: int
    checks: int
    next_at: float
    submitted_at: str | None
    created_at: str
    held_for: str | None = None  # "organization" or "client" while held
    client_id: str | None = None
    path: Path | None = None  # the file it was asked for (None: from before v4)
    trace_id: str | None = None  # Qonto's, with the last error

    @property
    def codes(self) -> list[int | str]:
        return [e.code for e in self.events]


def _event(raw: dict[str, object]) -> Event:
    code = raw.get("code")
    return Event(
        code=code if isinstance(code, int | str) else str(code),
        at=str(raw["at"]) if raw.get("at") is not None else None,
        reason=str(raw["reason"]) if raw.get("reason") is not None else None,
        reason_message=(
            str(raw["reason_message"]) if raw.get("reason_message") is not None else None
        ),
    )


def _einvoice(row: sqlite3.Row) -> Einvoice:
    return Einvoice(
        org=row["org"], invoice_id=row["invoice_id"], sha256=row["sha256"],
        state=EinvoiceState(row["state"]),
        einvoicing_status=row["einvoicing_status"],
        events=tuple(_event(e) for e in json.loads(row["lifecycle"])),
        detail=row["detail"], attempts=row["attempts"], checks=row["checks"],
        next_at=row["next_at"], submitted_at=row["submitted_at"], created_at=row["created_at"],
        held_for=row["held_for"], client_id=row["client_id"],
        path=blob_path(row["path"]) if row["path"] is not None else None,
        trace_id=row["trace_id"],
    )


_OPEN = ", ".join(f"'{s}'" for s in OPEN_STATES)


class Einvoices(Store):
    async def einvoices_due(
        self, orgs: Sequence[str], now: float, limit: int = 100
    ) -> list[Einvoice]:
        """These organizations' e-invoices to send, send again or look at whose time has
        come, the most overdue first."""
        marks = ",".join("?" * len(orgs))
        rows = await self._db.execute_fetchall(
            f"SELECT * FROM einvoices WHERE state IN ({_OPEN}) AND next_at <= ? "
            f"AND org IN ({marks}) ORDER BY next_at LIMIT ?", (now, *orgs, limit),
        )
        return [_einvoice(r) for r in rows]

    async def next_einvoice_at(self, orgs: Sequence[str]) -> float | None:
        marks = ",".join("?" * len(orgs))
        rows = await self._db.execute_fetchall(
            f"SELECT min(next_at) FROM einvoices WHERE state IN ({_OPEN}) "
            f"AND org IN ({marks})", tuple(orgs),
        )
        return next((r[0] for r in rows if r[0] is not None), None)

    async def einvoices_in(self, state: EinvoiceState, orgs: Sequence[str]) -> list[Einvoice]:
        """These organizations' e-invoices in this state, the soonest due first."""
        marks = ",".join("?" * len(orgs))
        rows = await self._db.execute_fetchall(
            f"SELECT * FROM einvoices WHERE state = ? AND org IN ({marks}) ORDER BY next_at",
            (state, *orgs),
        )
        return [_einvoice(r) for r in rows]

    async def forget_einvoice(self, org: str, invoice_id: str) -> None:
        """An e-invoice no longer asked for (never sent): as if it never was."""
        await self._write(lambda: self._db.execute(
            "DELETE FROM einvoices WHERE org = ? AND invoice_id = ? AND state IN (?, ?)",
            (org, invoice_id, EinvoiceState.PENDING, EinvoiceState.HELD),
        ))

    async def einvoice(self, org: str, invoice_id: str) -> Einvoice | None:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM einvoices WHERE org = ? AND invoice_id = ?", (org, invoice_id)
        )
        return next((_einvoice(r) for r in rows), None)

    async def einvoices_of(self, org: str, sha256: str) -> list[Einvoice]:
        try:
            rows = await self._db.execute_fetchall(
                "SELECT * FROM einvoices WHERE org = ? AND sha256 = ?", (org, sha256)
            )
        except sqlite3.OperationalError:  # `lookup` beside a daemon of an older version
            return []
        try:
            return [_einvoice(r) for r in rows]
        except (IndexError, TypeError, ValueError):  # not migrated yet: its columns differ
            return []

    async def update_einvoice(self, e: Einvoice, **changes: object) -> Einvoice:
        """Store the new state of an e-invoice (durably: it says what was sent)."""
        new = replace(e, **changes)  # type: ignore[arg-type]
        await self._write(lambda: self._db.execute(
            "UPDATE einvoices SET state = ?, einvoicing_status = ?, lifecycle = ?, detail = ?, "
            "attempts = ?, checks = ?, next_at = ?, submitted_at = ?, held_for = ?, "
            "client_id = ?, trace_id = ?, updated_at = ? WHERE org = ? AND invoice_id = ?",
            (new.state, new.einvoicing_status, json.dumps([x.as_json() for x in new.events]),
             new.detail, new.attempts, new.checks, new.next_at, new.submitted_at, new.held_for,
             new.client_id, new.trace_id, now_iso(), new.org, new.invoice_id),
        ))
        return new

    async def request_einvoice(
        self, org: str, invoice_id: str, sha256: str, path: Path, *, again: bool = True
    ) -> EinvoiceState | None:
        """Ask for an imported invoice to be sent by e-invoice (once per invoice).

        Returns the state it already had when it was asked for before (nothing
        changes), or None when it is to be sent now: new, or (with `again`, a
        person's request) held or rejected until now.
        """
        now = now_iso()
        rows = await self._db.execute_fetchall(
            "SELECT state FROM einvoices WHERE org = ? AND invoice_id = ?", (org, invoice_id)
        )
        before = next((EinvoiceState(r[0]) for r in rows), None)
        if before in (EinvoiceState.SUBMITTED, EinvoiceState.FINAL, EinvoiceState.PENDING) or (
            before is not None and not again
        ):
            return before
        await self._write(lambda: self._db.execute(
            "INSERT INTO einvoices (org, invoice_id, sha256, state, next_at, path, created_at, "
            "updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) "
            "ON CONFLICT (org, invoice_id) DO UPDATE SET state = 'pending', attempts = 0, "
            "detail = NULL, held_for = NULL, next_at = excluded.next_at, "
            "path = excluded.path, updated_at = excluded.updated_at "
            "WHERE state IN ('held', 'rejected')",
            (org, invoice_id, sha256, time.time(), path_blob(path), now, now),
        ))
        return None

    async def einvoice_summaries(self) -> list[tuple[str, EinvoiceState, str | None, list[object]]]:
        """(org, state, einvoicing_status, lifecycle codes) of every e-invoice, for
        `status`'s counts."""
        try:
            rows = await self._db.execute_fetchall(
                "SELECT org, state, einvoicing_status, lifecycle FROM einvoices"
            )
        except sqlite3.OperationalError:  # `status` beside a daemon of an older version
            return []
        out: list[tuple[str, EinvoiceState, str | None, list[object]]] = []
        for org, state, status, lifecycle in rows:
            codes = [e.get("code") if isinstance(e, dict) else e[0] for e in json.loads(lifecycle)]
            out.append((org, EinvoiceState(state), status, codes))
        return out

    async def retry_einvoices(self, org: str | None = None, sha256: str | None = None) -> int:
        """Rejected and held e-invoices (all, or one file's) are tried now; how many."""
        where, args = "state IN ('rejected', 'held')", []
        if org is not None and sha256 is not None:
            where += " AND org = ? AND sha256 = ?"
            args = [org, sha256]
        cur = await self._write(lambda: self._db.execute(
            f"UPDATE einvoices SET state = 'pending', attempts = 0, detail = NULL, "
            f"held_for = NULL, next_at = ?, updated_at = ? WHERE {where}",
            (time.time(), now_iso(), *args),
        ))
        return int(cur.rowcount)
