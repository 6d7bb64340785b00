"""The files in the daemon's hands, and the one set of counters of what became of them.

A file enters the books when discovery first sees it and leaves them through
`finish(path, outcome)` alone, whichever stage lets it go. Files that must be
looked at again (rewritten, incomplete, waiting for a twin) go back to
settling from here, so no later stage reaches back into an earlier one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog

from ..identity import Identity
from ..timing import MONOTONIC, Clock
from .records import Outcome, Seen

log = structlog.get_logger()


class Why(StrEnum):
    """Why a file in the daemon's hands (or left in its inbox) is not done yet."""

    SETTLING = "settling"  # being written, or not yet still for settle_seconds
    INCOMPLETE = "incomplete"  # still, but not whole: its writer may come back
    NO_PARSER = "no_parser"  # no parser process could start
    QUEUED = "queued"  # checked, waiting for a request
    TWIN = "twin"  # the same content is on its way from another file
    SENDING = "sending"  # in a request now
    RETRYING = "retrying"  # Qonto did not answer; sent again after a wait
    PAUSED = "paused"  # its organization is paused (401/403)
    UNREADABLE = "unreadable"  # cannot be opened: tried again at every scan
    NOT_MOVED = "not_moved"  # filed in the journal, the move refused: tried again
    RULES_UNKNOWN = "rules_unknown"  # the business rules could not judge it: held


@dataclass(frozen=True)
class Waiting:
    """Files waiting for any reason: how many, the oldest's age and why, and per reason."""

    files: int
    oldest_s: float | None
    oldest_why: Why | None
    by_why: dict[str, int]


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
        # Since when each file (in hand, or left in its inbox) waits, and why.
        self._since: dict[Path, float] = {}
        self._why: dict[Path, Why] = {}
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
            self._since.setdefault(seen.path, now)  # kept when it was left before
            self._why[seen.path] = Why.SETTLING
            self._settling.observe(seen, now)

    def touched(self, path: Path, now: float) -> None:
        """A watcher event named the file: it is being written."""
        self._settling.touched(path, now)

    def later(self, seen: Seen, until: float, why: Why) -> None:
        """Look at the file again at `until` (incomplete, or no parser for now)."""
        self._why[seen.path] = why
        self._settling.hold(seen, until)

    def waits(self, path: Path, why: Why) -> None:
        """What the file waits for now (a stage says so as it takes or leaves it)."""
        if path in self._in_hand:
            self._why[path] = why

    def listed(self, present: set[Path]) -> None:
        """A complete listing found these files: one left in its inbox and not among
        them is gone (removed by a person), and waits no more."""
        for path in [p for p in self._since if p not in self._in_hand and p not in present]:
            del self._since[path]
            self._why.pop(path, None)
            self.counts.left_files.discard(path)

    def waiting(self, now: float) -> Waiting:
        """Every file not done yet, for whatever reason (files in a request aside)."""
        waiting = [p for p in self._since if self._why.get(p) is not Why.SENDING]
        by_why: dict[str, int] = {}
        for path in waiting:
            why = self._why.get(path, Why.SETTLING)
            by_why[why] = by_why.get(why, 0) + 1
        oldest = min(waiting, key=self._since.__getitem__, default=None)
        if oldest is None:
            return Waiting(0, None, None, by_why)
        return Waiting(len(waiting), round(now - self._since[oldest], 1),
                       self._why.get(oldest, Why.SETTLING), by_why)

    def twin(self, first: Path, path: Path) -> None:
        """`path` holds the content `first` is sending: it waits for `first` to finish."""
        self._twins[first].append(path)

    def keep(self, path: Path, identity: Identity) -> None:
        """A file judged too large stays in its inbox: not judged again while unchanged."""
        self._kept[path] = identity

    def kept(self, seen: Seen) -> bool:
        return self._kept.get(seen.path) == seen.identity

    def warn_once(
        self, path: Path, event: str, detail: str, *, level: str = "warning", **fields: object
    ) -> None:
        """A warning about a file that stays where it is: said once, not at every scan."""
        if self._warned.get(path) != detail:
            self._warned[path] = detail
            emit = log.error if level == "error" else log.warning
            emit(event, path=path, detail=detail, **fields)

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
        if outcome is not Outcome.LEFT:  # a file left in its inbox still waits
            self._since.pop(path, None)
            self._why.pop(path, None)
        self._release_twins(path, left=outcome is Outcome.LEFT)

    def _recheck(self, path: Path) -> None:
        self._in_hand.add(path)
        self._since.setdefault(path, self._clock())
        self._why[path] = Why.SETTLING
        self._settling.track(path, self._clock())

    def _release_twins(self, path: Path, *, left: bool) -> None:
        # Files that waited for this one are looked at again: now they are duplicates.
        for twin in self._twins.pop(path, []):
            if left:
                self.finish(twin, Outcome.LEFT)
            else:
                self._recheck(twin)
