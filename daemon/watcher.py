"""Finding files: which names are input, a full scan of an inbox, and the watcher.

The watcher's events are only hints that make the daemon quick; the periodic
scan is the truth (inotify sees nothing that another machine writes on a share).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import stat
import time
from collections.abc import AsyncIterator, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
import watchfiles

from .identity import Identity, Seen, describe_mode

log = structlog.get_logger()

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
    for part in scan_parts(inbox):
        files += part.files
        skipped += part.skipped
    return Scan(files, skipped)


def scan_parts(inbox: Path, size: int = 512) -> Generator[Scan, None, None]:
    """`scan` in parts of `size` entries: a backlog of thousands starts settling at once.

    Each step blocks (call `next` in a thread); the listing stays open between steps.
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
            if len(files) + len(skipped) >= size:
                yield Scan(files, skipped)
                files, skipped = [], []
    yield Scan(files, skipped)


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


@dataclass(frozen=True)
class Hints:
    """What the watcher saw: paths to look at, and whether a full rescan is due.

    `rescan` is set whenever the watcher may have missed something: it was
    (re)started, an inbox appeared or was replaced, or it failed. After a
    (re)start, `watching_since` says when its watches were in place: a full
    listing begun after that has missed nothing, and need not be repeated.
    """

    paths: frozenset[Path]
    rescan: bool = False
    watching_since: float | None = None


_TICK_MS = 1000  # how often inboxes are checked for being deleted, recreated or remounted
_RETRY_S = 5.0


def _where(inboxes: list[Path]) -> dict[Path, tuple[int, int]]:
    """(device, inode) of each inbox that exists now: what changes on a remount or rebuild."""
    found: dict[Path, tuple[int, int]] = {}
    for inbox in inboxes:
        try:
            st = os.stat(inbox)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            found[inbox] = (st.st_dev, st.st_ino)
    return found


def _undecodable(exc: BaseException) -> bool:
    """watchfiles cannot report a name that is not UTF-8: it fails instead."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_undecodable(e) for e in exc.exceptions)
    return "Unable to decode path" in str(exc)


async def watch(
    inboxes: list[Path],
    stop_event: asyncio.Event,
    *,
    force_polling: bool,
    poll_delay_ms: int,
    watching: asyncio.Event | None = None,
) -> AsyncIterator[Hints]:
    """Yield hints about the inboxes until `stop_event` is set; never gives up.

    `watching` is set once the first watches are in place.

    An inbox deleted and recreated, remounted, or created after start is
    watched again within a second (inotify watches the directory it was given,
    not its name). The watcher is restarted after any failure, and each
    restart asks for a rescan, since events may have been lost meanwhile.
    """
    wanted = set(inboxes)
    while not stop_event.is_set():
        where = await asyncio.to_thread(_where, inboxes)
        if not where:
            await _wait(stop_event, _TICK_MS / 1000)
            continue
        restart = asyncio.Event()
        rescan = True  # after (re)starting: reported with the first tick, once watching
        since: list[float] = []
        # awatch sets up its watches before it first waits; a callback queued now
        # runs at that first wait, when every later change is seen.
        asyncio.get_running_loop().call_soon(_established, since, watching)
        try:
            async for changes in watchfiles.awatch(
                *where,
                stop_event=_Either(stop_event, restart),
                recursive=False,
                force_polling=force_polling,
                poll_delay_ms=poll_delay_ms,
                debounce=200,
                step=50,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                ignore_permission_denied=True,
            ):
                paths = {Path(p) for change, p in changes if change != watchfiles.Change.deleted}
                if any(Path(raw) in wanted for _, raw in changes) or (
                    await asyncio.to_thread(_where, inboxes) != where
                ):
                    restart.set()  # an inbox itself was deleted, recreated or remounted
                hints = frozenset(p for p in paths if p.parent in wanted and is_candidate(p.name))
                if hints or rescan:
                    yield Hints(hints, rescan, since[0] if rescan and since else None)
                rescan = False
        except Exception as exc:
            if _undecodable(exc):
                # A file whose name is not UTF-8: the rescan (which reads names as
                # bytes) picks it up; the watcher starts again at once.
                log.debug("watcher_restarted", reason="a file name that is not UTF-8")
                yield Hints(frozenset(), rescan=True)
                continue
            log.warning("watcher_error", error=f"{type(exc).__name__}: {exc}",
                        hint="a full rescan runs now; the watcher starts again in 5 s")
            yield Hints(frozenset(), rescan=True)
            await _wait(stop_event, _RETRY_S)
            continue
        if not stop_event.is_set() and not restart.is_set():
            log.warning("watcher_error", error="the file watcher stopped by itself",
                        hint="a full rescan runs now; the watcher starts again")


def _established(since: list[float], watching: asyncio.Event | None) -> None:
    since.append(time.monotonic())
    if watching is not None:
        watching.set()


class _Either:
    """An event that is set when either of two is (what awatch's stop_event needs)."""

    def __init__(self, a: asyncio.Event, b: asyncio.Event) -> None:
        self._a, self._b = a, b

    def is_set(self) -> bool:
        return self._a.is_set() or self._b.is_set()

    def set(self) -> None:  # awatch sets its stop event when cancelled
        self._b.set()


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
