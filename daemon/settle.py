"""Deciding when a file is completely written. Pure: the caller stats and gives the time.

A file is settled once its size and mtime have not changed, and no watcher
event has named it, for `settle_s` on the daemon's own monotonic clock (a
copied file keeps an old mtime, so the mtime's age proves nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .watcher import Seen


@dataclass
class _Track:
    size: int
    mtime_ns: int
    still_since: float
    first_seen: float
    warned: bool = False


class Settler:
    def __init__(self, settle_s: float, unstable_warning_s: float) -> None:
        self._settle_s = settle_s
        self._unstable_warning_s = unstable_warning_s
        self._tracks: dict[Path, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, path: object) -> bool:
        return path in self._tracks

    def paths(self) -> list[Path]:
        return list(self._tracks)

    def observe(self, seen: Seen, now: float) -> None:
        """A fresh stat of the file (from a scan or the settle loop)."""
        track = self._tracks.get(seen.path)
        if track is None:
            self._tracks[seen.path] = _Track(seen.size, seen.mtime_ns, now, now)
        elif (track.size, track.mtime_ns) != (seen.size, seen.mtime_ns):
            track.size, track.mtime_ns, track.still_since = seen.size, seen.mtime_ns, now

    def track(self, path: Path, now: float) -> None:
        """Follow a file whose stat is not known yet; it settles after two still stats."""
        self._tracks.setdefault(path, _Track(-1, -1, now, now))

    def touched(self, path: Path, now: float) -> None:
        """A watcher event named the file: whatever its stat says, it is not still."""
        track = self._tracks.get(path)
        if track is not None:
            track.still_since = now

    def forget(self, path: Path) -> None:
        self._tracks.pop(path, None)

    def settled(self, now: float) -> list[Seen]:
        """Files still for long enough; they are handed out once and forgotten."""
        ready = [
            Seen(path, t.size, t.mtime_ns)
            for path, t in self._tracks.items()
            if now - t.still_since >= self._settle_s
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
