"""Finding files: which names are input, a full scan of an inbox, and the watcher.

The watcher's events are only hints that make the daemon quick; the periodic
scan is the truth (inotify sees nothing that another machine writes on a share).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import stat
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from .identity import Identity
from .inspect import describe_mode

# Names that careful writers use while a file is incomplete, and desktop junk.
_IGNORED_PATTERNS = (
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.filepart",
    "*.swp",
    "*.swx",
    "*~",
    "~$*",
    "~syncthing~*",
    "thumbs.db",
    "desktop.ini",
    "*.error.json",
)


def is_candidate(name: str) -> bool:
    """Whether a name in an inbox is meant as input (not hidden, temporary or junk)."""
    if not name or name.startswith("."):  # .name, ._name, .DS_Store, .syncthing.*
        return False
    lowered = name.lower()
    return not any(fnmatch.fnmatchcase(lowered, pattern) for pattern in _IGNORED_PATTERNS)


@dataclass(frozen=True)
class Seen:
    path: Path
    identity: Identity


@dataclass(frozen=True)
class Skipped:
    path: Path
    what: str  # "a symbolic link", "a FIFO", ...


@dataclass(frozen=True)
class Scan:
    files: list[Seen]
    skipped: list[Skipped]


def scan(inbox: Path) -> Scan:
    """Regular files with candidate names directly in `inbox` (blocking: use a thread).

    Subdirectories (done/, failed/ or anything else) are not descended into.
    Raises OSError when the inbox itself cannot be listed.
    """
    files: list[Seen] = []
    skipped: list[Skipped] = []
    with os.scandir(inbox) as entries:
        for entry in entries:
            if not is_candidate(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            path = Path(entry.path)
            if stat.S_ISREG(st.st_mode):
                files.append(Seen(path, Identity.of(st)))
            elif not stat.S_ISDIR(st.st_mode):
                skipped.append(Skipped(path, describe_mode(st.st_mode)))
    return Scan(files, skipped)


def stat_all(paths: Iterable[Path]) -> dict[Path, Seen | None]:
    """lstat each path; None where it is gone or no longer a regular file."""
    out: dict[Path, Seen | None] = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            out[path] = None
            continue
        out[path] = Seen(path, Identity.of(st)) if stat.S_ISREG(st.st_mode) else None
    return out


async def watch(
    inboxes: list[Path],
    stop_event: asyncio.Event,
    *,
    force_polling: bool,
    poll_delay_ms: int,
) -> AsyncIterator[set[Path]]:
    """Yield sets of inbox paths that were added or modified (not recursive)."""
    wanted = set(inboxes)
    async for changes in watchfiles.awatch(
        *inboxes,
        stop_event=stop_event,
        recursive=False,
        force_polling=force_polling,
        poll_delay_ms=poll_delay_ms,
        debounce=200,
        step=50,
        ignore_permission_denied=True,
    ):
        paths = {
            Path(raw)
            for change, raw in changes
            if change != watchfiles.Change.deleted
        }
        hints = {p for p in paths if p.parent in wanted and is_candidate(p.name)}
        if hints:
            yield hints
