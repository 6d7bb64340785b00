"""The files in the daemon's hands, and the one set of counters of what became of them.

A file enters the books when discovery first sees it and leaves them through
`finish(path, outcome)` alone, whichever stage lets it go. Files that must be
looked at again (rewritten, incomplete, waiting for a twin) go back to
settling from here, so no later stage reaches back into an earlier one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from ..identity import Identity
from ..timing import MONOTONIC, Clock
from .records import Outcome, Seen

log = structlog.get_logger()


class Tracking(Protocol):
    """What the books need of settling (settle.Settler)."""

    def __contains__(self, path: object) -> bool: ...

    def observe(self, seen: Seen, now: float) -> None: ...

    def hold(self, seen: Seen, until: float) -> None: ...

    def track(self, path: Path, now: float) -> None: ...

    def touched(self, path: Path, now: float) -> None: ...

    def forget(self, path: Path) -> None: ...


class Forgetting(Protocol):
    def forget(self, path: Path) -> None: ...


@dataclass
class Counts:
    """Since start: files that reached done/ or failed/, and files left where they are
    now (each counted once, however often it was looked at)."""

    imported: int = 0
    duplicates: int = 0
    failed: int = 0
    left_files: set[Path] = field(default_factory=set)

    @property
    def left(self) -> int:
        return len(self.left_files)

    @property
    def done(self) -> int:
        return self.imported + self.duplicates


class Books:
    def __init__(
        self, settling: Tracking, unfinished: Forgetting, clock: Clock = MONOTONIC
    ) -> None:
        self._settling = settling
        self._unfinished = unfinished
        self._clock = clock
        self._in_hand: set[Path] = set()  # settling, examined, waiting, sending
        # Files whose content is already on its way from another file (key): they wait.
        self._twins: dict[Path, list[Path]] = defaultdict(list)
        # Files too large to copy into failed/, left in the inbox with their report.
        self._kept: dict[Path, Identity] = {}
        self._warned: dict[Path, str] = {}
        self.counts = Counts()

    def __contains__(self, path: object) -> bool:
        return path in self._in_hand

    def __len__(self) -> int:
        return len(self._in_hand)

    @property
    def idle(self) -> bool:
        return not self._in_hand

    # -- in --------------------------------------------------------------------------

    def consider(self, seen: Seen, now: float) -> None:
        """A file seen by a scan or the watcher: follow it until it settles."""
        if seen.path in self._settling:
            self._settling.observe(seen, now)
        elif seen.path not in self._in_hand:
            self._in_hand.add(seen.path)
            self._settling.observe(seen, now)

    def touched(self, path: Path, now: float) -> None:
        """A watcher event named the file: it is being written."""
        self._settling.touched(path, now)

    def later(self, seen: Seen, until: float) -> None:
        """Look at the file again at `until` (incomplete, or no parser for now)."""
        self._settling.hold(seen, until)

    def twin(self, first: Path, path: Path) -> None:
        """`path` holds the content `first` is sending: it waits for `first` to finish."""
        self._twins[first].append(path)

    def keep(self, path: Path, identity: Identity) -> None:
        """A file judged too large stays in its inbox: not judged again while unchanged."""
        self._kept[path] = identity

    def kept(self, seen: Seen) -> bool:
        return self._kept.get(seen.path) == seen.identity

    def warn_once(self, path: Path, event: str, detail: str, **fields: object) -> None:
        """A warning about a file that stays where it is: said once, not at every scan."""
        if self._warned.get(path) != detail:
            self._warned[path] = detail
            log.warning(event, path=path, detail=detail, **fields)

    def read_fine(self, path: Path) -> None:
        self._warned.pop(path, None)

    # -- out -------------------------------------------------------------------------

    def finish(self, path: Path, outcome: Outcome) -> None:
        """The one way a file leaves the daemon's hands (or goes back to settling)."""
        known = path in self._in_hand
        self._unfinished.forget(path)
        match outcome:
            case Outcome.CHANGED:
                self._recheck(path)
                self._release_twins(path, left=False)
                return
            case Outcome.IMPORTED:
                self.counts.imported += known
            case Outcome.DUPLICATE:
                self.counts.duplicates += known
            case Outcome.FAILED:
                self.counts.failed += known
            case Outcome.LEFT:
                if known:
                    self.counts.left_files.add(path)
            case Outcome.KEPT | Outcome.GONE:
                pass
        if outcome is not Outcome.LEFT:
            self.counts.left_files.discard(path)  # it went somewhere after all
        self._in_hand.discard(path)
        self._settling.forget(path)
        self._release_twins(path, left=outcome is Outcome.LEFT)

    def _recheck(self, path: Path) -> None:
        self._in_hand.add(path)
        self._settling.track(path, self._clock())

    def _release_twins(self, path: Path, *, left: bool) -> None:
        # Files that waited for this one are looked at again: now they are duplicates.
        for twin in self._twins.pop(path, []):
            if left:
                self.finish(twin, Outcome.LEFT)
            else:
                self._recheck(twin)
