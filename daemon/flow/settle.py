"""Step 2: deciding when a file is completely written, and handing it to the intake.

A file is settled once its identity (device, inode, size, mtime, ctime) has
not changed, and no watcher event has named it, for `settle_s` on the daemon's
own monotonic clock (a copied file keeps an old mtime, so its age proves
nothing). `Settler` and `Unfinished` are pure: the loop stats and gives the time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from .. import watcher
from ..aio import wait_first
from ..identity import Identity
from ..timing import MONOTONIC, Clock
from .books import Books
from .records import Outcome, Seen

log = structlog.get_logger()


@dataclass
class _Track:
    identity: Identity | None  # None until the first stat
    still_since: float
    first_seen: float
    warned: bool = False


class Settler:
    """The files being watched until they hold still."""

    def __init__(self, settle_s: float, unstable_warning_s: float) -> None:
        self._settle_s = settle_s
        self._unstable_warning_s = unstable_warning_s
        self._tracks: dict[Path, _Track] = {}
        self.wake = asyncio.Event()  # set when a file is added: the loop looks again

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, path: object) -> bool:
        return path in self._tracks

    def observe(self, seen: Seen, now: float) -> None:
        """A fresh stat of the file (from a scan or the settle loop)."""
        track = self._tracks.get(seen.path)
        if track is None:
            self._tracks[seen.path] = _Track(seen.identity, now, now)
            self.wake.set()
        elif track.identity != seen.identity:
            track.identity, track.still_since = seen.identity, now

    def hold(self, seen: Seen, until: float) -> None:
        """Follow a file that may not settle before `until` even if it does not change."""
        self._tracks[seen.path] = _Track(seen.identity, until - self._settle_s, until)
        self.wake.set()

    def track(self, path: Path, now: float) -> None:
        """Follow a file whose stat is not known yet; it settles after two still stats."""
        self._tracks.setdefault(path, _Track(None, now, now))
        self.wake.set()

    def touched(self, path: Path, now: float) -> None:
        """A watcher event named the file: whatever its stat says, it is not still."""
        track = self._tracks.get(path)
        if track is not None:
            track.still_since = now

    def forget(self, path: Path) -> None:
        self._tracks.pop(path, None)

    def due(self, now: float) -> list[Path]:
        """Files that may have settled: only these need a fresh stat (no stat storm)."""
        return [
            path for path, t in self._tracks.items()
            if t.identity is None or now - t.still_since >= self._settle_s
        ]

    def settled(self, now: float) -> list[Seen]:
        """Files still for long enough; they are handed out once and forgotten."""
        ready = [
            Seen(path, t.identity)
            for path, t in self._tracks.items()
            if t.identity is not None and now - t.still_since >= self._settle_s
        ]
        for seen in ready:
            del self._tracks[seen.path]
        return ready

    def unstable(self, now: float) -> list[tuple[Path, float]]:
        """Files changing for longer than the warning threshold, each reported once."""
        out: list[tuple[Path, float]] = []
        for path, t in self._tracks.items():
            if not t.warned and now - t.first_seen >= self._unstable_warning_s:
                t.warned = True
                out.append((path, now - t.first_seen))
        return out

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest file could settle, None when nothing is tracked."""
        if not self._tracks:
            return None
        soonest = min(t.still_since for t in self._tracks.values()) + self._settle_s
        return max(0.0, soonest - now)


@dataclass
class _Short:
    identity: Identity
    since: float


class Unfinished:
    """Files that held still but stop short of their format's end: writers that paused.

    Such a file waits and is looked at again (a stat, not a read, while it
    does not change); once it has stayed the same for `fail_s` it is judged
    truncated.
    """

    def __init__(self, fail_s: float, recheck_s: float) -> None:
        self.fail_s = fail_s
        self.recheck_s = recheck_s
        self._files: dict[Path, _Short] = {}

    def __len__(self) -> int:
        return len(self._files)

    def unchanged(self, seen: Seen, now: float) -> bool:
        """Known incomplete in exactly this state, and not yet due for a verdict."""
        short = self._files.get(seen.path)
        if short is None or short.identity != seen.identity:
            return False
        return now - short.since < self.fail_s

    def note(
        self, path: Path, identity: Identity, now: float, *, unchanged_s: float = 0.0
    ) -> tuple[bool, float]:
        """Record that the file is incomplete; (first time in this state, seconds waited).

        `unchanged_s`: how long the file has not changed by its own ctime, so that a
        restart does not start its clock again (at most `fail_s` is believed: a
        share's clock may be off).
        """
        short = self._files.get(path)
        if short is None or short.identity != identity:
            waited_s = min(max(unchanged_s, 0.0), self.fail_s)
            self._files[path] = _Short(identity, now - waited_s)
            return True, waited_s
        return False, now - short.since

    def next_look(self, path: Path, now: float) -> float:
        """When to look at the file again: soon, and at the latest when its time is up."""
        short = self._files[path]
        return min(now + self.recheck_s, short.since + self.fail_s)

    def forget(self, path: Path) -> None:
        self._files.pop(path, None)


class _Fair:
    """Files handed out in turn from each folder: no backlog starves another folder."""

    def __init__(self) -> None:
        self._lanes: dict[Path, deque[Seen]] = {}
        self._turn: deque[Path] = deque()

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def put(self, seen: Seen) -> None:
        folder = seen.path.parent
        lane = self._lanes.get(folder)
        if lane is None:
            lane = self._lanes[folder] = deque()
            self._turn.append(folder)
        lane.append(seen)

    def pop(self) -> Seen | None:
        if not self._turn:
            return None
        folder = self._turn.popleft()
        lane = self._lanes[folder]
        seen = lane.popleft()
        if lane:
            self._turn.append(folder)
        else:
            del self._lanes[folder]
        return seen


class Settled:
    """Settled files, fair across folders, in two queues: those a parser must read
    (PDFs where Factur-X or the rules are checked) and the others. Intake workers
    that may not wait for a parser take only the others, so an image never queues
    behind a backlog of slow PDFs."""

    def __init__(self, parses: Callable[[Path], bool] | None = None) -> None:
        self._parses = parses or (lambda _: False)
        self._parsing = _Fair()
        self._plain = _Fair()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._parsing) + len(self._plain)

    def put(self, seen: Seen) -> None:
        (self._parsing if self._parses(seen.path) else self._plain).put(seen)
        self._ready.set()

    def get_nowait(self, *, may_parse: bool = True) -> Seen | None:
        return (self._parsing.pop() if may_parse else None) or self._plain.pop()

    async def get(self, stopping: asyncio.Event, *, may_parse: bool = True) -> Seen | None:
        """The next file (one that needs no parser unless `may_parse`), or None once the
        daemon stops."""
        while not stopping.is_set():
            seen = self.get_nowait(may_parse=may_parse)
            if seen is not None:
                return seen
            self._ready.clear()
            await wait_first(self._ready, stopping)
        return None


async def settle_loop(
    settler: Settler,
    books: Books,
    settled: Settled,
    stopping: asyncio.Event,
    clock: Clock = MONOTONIC,
) -> None:
    """Stat the files that may have settled; hand the settled ones to the intake."""
    while not stopping.is_set():
        due_s = settler.next_due(clock())
        settler.wake.clear()
        if due_s is None or due_s > 0:
            await wait_first(stopping, settler.wake, timeout_s=due_s)
            continue
        stats = await asyncio.to_thread(watcher.stat_all, settler.due(clock()))
        now = clock()
        for path, seen in stats.items():
            if seen is None:
                settler.forget(path)
                books.finish(path, Outcome.GONE)
            else:
                settler.observe(seen, now)
        for seen in settler.settled(now):
            settled.put(seen)
        for path, age_s in settler.unstable(now):
            log.warning(
                "file_unstable", path=path, changing_for_s=round(age_s),
                hint="still being written; it is sent once it stops changing",
            )
