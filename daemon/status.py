"""What a person asks the daemon without stopping it: `status`, `retry`, `check-config`.

Each reads the configuration and, read-only, the journal; none talks to Qonto
(except `check-config --online`). They work while the daemon runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import mover, watcher
from .config import Config, Folder
from .journal import DONE, EINVOICE_COUNTS, FAILED, QUEUED, SENDING, Journal
from .lock import holder


async def collect(cfg: Config) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-ready object."""
    pid = await asyncio.to_thread(holder, cfg.database)
    journal = await Journal.open_readonly(cfg.database)
    try:
        places = await journal.places() if journal else []
        orgs = await journal.organizations() if journal else {}
        einvoices = await journal.einvoice_counts() if journal else {}
    finally:
        if journal is not None:
            await journal.close()
    per_folder: Counter[tuple[Path, str]] = Counter()
    for _, state, path in places:
        per_folder[(path.parent, state)] += 1
    folders = [await asyncio.to_thread(_folder, f, per_folder) for f in cfg.folders]
    return {
        "running": pid is not None,
        "pid": pid if pid and pid > 0 else None,
        "database": str(cfg.database),
        "folders": folders,
        "organizations": [
            {
                "org": org.key,
                "paused": bool(orgs.get(org.key, {}).get("paused")),
                "paused_reason": orgs.get(org.key, {}).get("paused_reason"),
                "last_success_at": orgs.get(org.key, {}).get("last_success_at"),
                "last_error": orgs.get(org.key, {}).get("last_error"),
                "last_error_at": orgs.get(org.key, {}).get("last_error_at"),
                # waiting (to be sent), submitted, delivered (202 or later), refused.
                "einvoices": einvoices.get(org.key, dict.fromkeys(EINVOICE_COUNTS, 0)),
            }
            for org in cfg.organizations
        ],
    }


def _folder(folder: Folder, counts: Counter[tuple[Path, str]]) -> dict[str, Any]:
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
        "available": available,
        "waiting": len(waiting),
        "queued": counts[(folder.inbox, QUEUED)] + counts[(folder.inbox, SENDING)],
        "done": counts[(folder.done, DONE)],
        "failed": counts[(folder.failed, FAILED)],
        "oldest_waiting": str(oldest[1]) if oldest else None,
        # ctime: when the file arrived here (a copy keeps an old mtime).
        "oldest_waiting_s": round(time.time() - oldest[0]) if oldest else None,
    }


def render(status: dict[str, Any]) -> str:
    """The text form of `status`, for a person at a terminal."""
    running = f"running (pid {status['pid']})" if status["running"] else "not running"
    lines = [
        f"daemon: {running}",
        f"journal: {status['database']}",
    ]
    for f in status["folders"]:
        age = f" (oldest: {f['oldest_waiting']}, {f['oldest_waiting_s']} s)" if f["waiting"] else ""
        lines.append(
            f"{f['inbox']} [{f['org']}]: {f['waiting']} waiting{age}, {f['queued']} queued, "
            f"{f['done']} done, {f['failed']} failed"
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
                f"{e['refused']} refused or rejected, {e['waiting']} waiting to be sent"
            )
    return "\n".join(lines)


def retry(cfg: Config, paths: list[Path], everything: bool) -> tuple[list[str], list[str]]:
    """Move failed files back into their inbox, their report removed. (moved, problems)."""
    moved: list[str] = []
    problems: list[str] = []
    targets: list[tuple[Path, Folder]] = []
    by_failed = {f.failed.resolve(): f for f in cfg.folders}
    if everything:
        for folder in cfg.folders:
            try:
                names = sorted(os.listdir(folder.failed))
            except FileNotFoundError:
                continue
            targets += [
                (folder.failed / n, folder) for n in names
                if not n.endswith(mover.SIDECAR_SUFFIX) and not n.startswith(".")
                and (folder.failed / n).is_file()
            ]
    for path in paths:
        owner = by_failed.get(path.resolve().parent)
        if owner is None:
            problems.append(f"{path}: not in a failed/ folder of this configuration")
            continue
        targets.append((path, owner))
    for path, folder in targets:
        sidecar = path.with_name(path.name + mover.SIDECAR_SUFFIX)
        try:
            dest = mover.move_into(path, folder.inbox)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        sidecar.unlink(missing_ok=True)
        moved.append(f"{path} -> {dest}")
    return moved, problems


def as_json(status: dict[str, Any]) -> str:
    return json.dumps(status, ensure_ascii=False)


_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "sshfs")


def check(cfg: Config) -> tuple[list[str], list[str]]:
    """What `run` would trip on: (problems, notes). Blocking: it stats folders."""
    problems: list[str] = []
    notes = list(cfg.notes)
    for index, folder in enumerate(cfg.folders):
        where = f"folders[{index}]"
        if not os.access(folder.inbox, os.R_OK | os.X_OK):
            problems.append(f"{where}.inbox {folder.inbox}: missing or not readable")
        for key, path in (("done", folder.done), ("failed", folder.failed)):
            if not _writable(path):
                problems.append(f"{where}.{key} {path}: cannot be created or written")
        if _device(folder.inbox) != _device(folder.done) and _device(folder.done) is not None:
            notes.append(
                f"{where}.done {folder.done} is on another filesystem than the inbox: "
                "each move is a copy"
            )
    journal_dir = cfg.database.parent
    if not _writable(journal_dir):
        problems.append(f"database.path {cfg.database}: its folder cannot be created or written")
    else:
        kind = _fs_type(journal_dir)
        if kind and (kind in _NETWORK_FS or kind.startswith("fuse")):
            notes.append(
                f"database.path {cfg.database} is on a {kind} filesystem: keep the journal on "
                "local disk (SQLite does not work reliably on network shares)"
            )
    return problems, notes


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(path: Path) -> bool:
    """Whether the daemon's user could create `path` (if needed) and write in it."""
    base = _existing(path)
    return base.is_dir() and os.access(base, os.W_OK | os.X_OK)


def _device(path: Path) -> int | None:
    try:
        return _existing(path).stat().st_dev
    except OSError:
        return None


def _fs_type(path: Path) -> str | None:
    """The filesystem type of the mount `path` is on (from /proc/self/mounts)."""
    target = os.path.realpath(_existing(path))
    best: tuple[int, str] | None = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > best[0]):
                    best = (len(point), fields[2])
    except OSError:
        return None
    return best[1] if best else None
