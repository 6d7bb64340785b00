"""`status`: what the daemon is doing, from the journal and the folders (it may be running).

It reads the configuration and, read-only, the journal; it never talks to Qonto.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from enum import IntEnum
from pathlib import Path
from typing import Any

from .. import logs, watcher
from ..config import Config, Folder
from ..flow.lifecycle import Bucket, einvoice_counts
from ..journal import Journal, State
from ..lock import holder
from ..mover import SIDECAR_SUFFIX
from ..redact import Redactor


def _shown(redact: Redactor, text: object) -> object:
    return redact(text) if isinstance(text, str) else text


async def collect(cfg: Config) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-ready object."""
    pid = await asyncio.to_thread(holder, cfg.database)
    journal = await Journal.open_readonly(cfg.database)
    try:
        places = await journal.places() if journal else []
        orgs = await journal.organizations() if journal else {}
        einvoices = einvoice_counts(await journal.einvoice_summaries()) if journal else {}
        # Errors a server sent may quote a refresh token kept in the journal.
        redact = Redactor(await journal.refresh_tokens() if journal else [])
    finally:
        if journal is not None:
            await journal.close()
    per_folder: Counter[tuple[Path, str]] = Counter()
    state_of: dict[Path, str] = {}
    for _, state, path in places:
        per_folder[(path.parent, state)] += 1
        state_of[path] = state
    folders = [await asyncio.to_thread(_folder, f, per_folder, state_of) for f in cfg.folders]
    return {
        "running": pid is not None,
        "pid": pid if pid and pid > 0 else None,
        "database": str(cfg.database),
        "folders": folders,
        "organizations": [
            {
                "org": org.key,
                "paused": bool(orgs.get(org.key, {}).get("paused")),
                "paused_reason": _shown(redact, orgs.get(org.key, {}).get("paused_reason")),
                "last_success_at": orgs.get(org.key, {}).get("last_success_at"),
                "last_error": _shown(redact, orgs.get(org.key, {}).get("last_error")),
                "last_error_at": orgs.get(org.key, {}).get("last_error_at"),
                # Set by the daemon after [log] unreachable_alert_seconds without an answer.
                "unreachable_since": orgs.get(org.key, {}).get("unreachable_since"),
                # waiting (to be sent), held (for the organization or the client),
                # submitted, delivered (202 or later), action_needed (207, 208), refused
                # (refused, rejected or failed).
                "einvoices": einvoices.get(org.key, dict.fromkeys(Bucket, 0)),
            }
            for org in cfg.organizations
        ],
    }


# Why a file is still in its inbox, as far as the journal can tell.
_WHY = {
    State.QUEUED: "queued", State.SENDING: "sending",
    State.IMPORTED: "imported, not moved yet", State.DONE: "imported, not moved yet",
    State.FAILED: "failed, not moved yet",
}


def _folder(
    folder: Folder, counts: Counter[tuple[Path, str]], state_of: dict[Path, str]
) -> dict[str, Any]:
    waiting: list[tuple[float, Path]] = []
    available = True
    try:
        found = watcher.scan(folder.inbox)
    except OSError:
        available = False
    else:
        for seen in found.files:
            waiting.append((seen.identity.ctime_ns / 1e9, seen.path))
    oldest = min(waiting, default=None)
    return {
        "inbox": str(folder.inbox),
        "org": folder.org.key,
        "facturx": folder.facturx,
        "rules": folder.rules,
        "available": available,
        "waiting": len(waiting),
        "queued": counts[(folder.inbox, State.QUEUED)] + counts[(folder.inbox, State.SENDING)],
        # Files as `ls` shows them (duplicates too), and the invoices they are.
        "done": _files_in(folder.done),
        "failed": _files_in(folder.failed),
        "imported_invoices": counts[(folder.done, State.DONE)],
        # A name that is not UTF-8 shows its bytes as \xNN, as the log does.
        "oldest_waiting": logs.printable(str(oldest[1])) if oldest else None,
        # ctime: when the file arrived here (a copy keeps an old mtime).
        "oldest_waiting_s": round(time.time() - oldest[0]) if oldest else None,
        # Not in the journal: being written, incomplete, unreadable, or not seen yet
        # (the heartbeat says which).
        "oldest_waiting_why": (
            _WHY.get(State(state_of[oldest[1]]), "in the journal")
            if oldest and oldest[1] in state_of else "not taken yet" if oldest else None
        ),
    }


def _files_in(directory: Path) -> int:
    """Files a person sees there: not the reports beside them, not hidden ones."""
    try:
        with os.scandir(directory) as entries:
            return sum(
                1 for e in entries
                if not e.name.startswith(".") and not e.name.endswith(SIDECAR_SUFFIX)
                and e.is_file(follow_symlinks=False)
            )
    except OSError:
        return 0


def render(status: dict[str, Any]) -> str:
    """The text form of `status`, for a person at a terminal."""
    running = f"running (pid {status['pid']})" if status["running"] else "not running"
    lines = [
        f"daemon: {running}",
        f"journal: {status['database']}",
    ]
    for f in status["folders"]:
        age = (f" (oldest: {f['oldest_waiting']}, {f['oldest_waiting_s']} s, "
               f"{f['oldest_waiting_why']})" if f["waiting"] else "")
        lines.append(
            f"{f['inbox']} [{f['org']}]: {f['waiting']} waiting{age}, {f['queued']} queued, "
            f"{f['done']} done ({f['imported_invoices']} invoices), {f['failed']} failed"
            + ("" if f["available"] else " — the inbox cannot be listed")
        )
    for o in status["organizations"]:
        state = f"paused: {o['paused_reason']}" if o["paused"] else "active"
        lines.append(
            f"{o['org']}: {state}; last success {o['last_success_at'] or 'never'}"
            + (f"; last error {o['last_error_at']}: {o['last_error']}" if o["last_error"] else "")
        )
        e = o["einvoices"]
        if any(e.values()):
            lines.append(
                f"{o['org']} e-invoices: {e['submitted']} submitted, {e['delivered']} delivered, "
                f"{e['refused']} refused or rejected, {e['waiting']} waiting to be sent, "
                f"{e['held']} held, {e['action_needed']} needing action (dispute, suspension)"
            )
    return "\n".join(lines)


def as_json(status: dict[str, Any]) -> str:
    return json.dumps(status, ensure_ascii=False)


class Check(IntEnum):
    """The monitoring-plugin convention (Nagios, Icinga, Zabbix, Checkmk...)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def check(status: dict[str, Any], *, max_age_s: float) -> tuple[Check, str]:
    """`status --check`: one verdict and one line."""
    if not status["running"]:
        return Check.CRITICAL, "no daemon runs on this configuration"
    warnings: list[str] = []
    for o in status["organizations"]:
        if o["paused"]:
            warnings.append(f"{o['org']} paused ({o['paused_reason']})")
        if o.get("unreachable_since"):
            warnings.append(f"{o['org']}: Qonto unreachable since {o['unreachable_since']}")
        held = o["einvoices"].get("held", 0)
        if held:
            warnings.append(f"{o['org']}: {held} e-invoice(s) held")
    for f in status["folders"]:
        if not f["available"]:
            warnings.append(f"{f['inbox']} cannot be listed")
        elif f["oldest_waiting_s"] is not None and f["oldest_waiting_s"] >= max_age_s:
            warnings.append(f"{f['oldest_waiting']} waiting for {f['oldest_waiting_s']} s")
    waiting = sum(f["waiting"] for f in status["folders"])
    done = sum(f["done"] for f in status["folders"])
    if warnings:
        return Check.WARNING, "; ".join(warnings)
    return Check.OK, f"running (pid {status['pid']}), {waiting} waiting, {done} in done/"
