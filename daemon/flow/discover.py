"""Step 1: finding files. The listing is the truth; the watcher's events are hints.

The rescan lists every inbox at start, then every `rescan_seconds`, and at
once when the watcher may have missed something (it restarted, an inbox was
replaced) or on SIGHUP. Every file found goes to the books.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from .. import watcher
from ..aio import wait_event, wait_first
from ..config import Config, Folder
from ..timing import DEFAULT, MONOTONIC, Clock, Intervals
from .books import Books

log = structlog.get_logger()


class Discovery:
    def __init__(
        self,
        config: Config,
        books: Books,
        stopping: asyncio.Event,
        *,
        intervals: Intervals = DEFAULT,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._config = config
        self._books = books
        self._stopping = stopping
        self._intervals = intervals
        self._clock = clock
        self._rescan_now = asyncio.Event()
        self._unavailable: set[Path] = set()
        self._watching = asyncio.Event()
        self._listed_at: float | None = None  # when the latest complete listing began
        # Set after the first complete listing: from then on every file is known.
        self.listed_once = asyncio.Event()

    def rescan(self) -> None:
        """List every inbox again now (SIGHUP)."""
        self._rescan_now.set()

    async def rescan_loop(self, *, once: bool = False) -> None:
        if not once:
            # Listing once the watcher is in place spares the second listing its
            # start would ask for (20,000 files take a second).
            await wait_first(
                self._stopping, self._watching, timeout_s=self._intervals.watcher_start_s
            )
        while not self._stopping.is_set():
            # Cleared before listing: a request made during the listing gets its own.
            self._rescan_now.clear()
            began = self._listed_at = self._clock()
            present: set[Path] = set()
            listed = [await self.scan(folder, present) for folder in self._config.folders]
            if all(listed):
                self._books.listed(present)
            else:
                self._listed_at = None  # an inbox was missed: it proves nothing
            ended = self._clock()
            self.listed_once.set()
            if once:
                return
            await wait_first(
                self._stopping, self._rescan_now,
                timeout_s=self._config.watch.rescan_interval_s,
            )
            # Asked again at once (a name that is not UTF-8 being written asks after
            # every event): listings stay at least as far apart as one takes, and 1 s.
            rest_s = max(self._intervals.rescan_gap_s, ended - began) - (self._clock() - ended)
            if rest_s > 0:
                await wait_event(self._stopping, rest_s)

    async def scan(self, folder: Folder, present: set[Path] | None = None) -> bool:
        """List one inbox (its files join `present`); False when it could not be listed
        to the end."""
        parts = watcher.scan_parts(folder.inbox)
        try:
            while (found := await asyncio.to_thread(next, parts, None)) is not None:
                if folder.inbox in self._unavailable:
                    self._unavailable.discard(folder.inbox)
                    log.info("folder_available", path=folder.inbox)
                now = self._clock()
                for skipped in found.skipped:
                    self._books.warn_once(
                        skipped.path, "file_skipped", f"{skipped.what}, not a regular file"
                    )
                for seen in found.files:
                    self._books.consider(seen, now)
                if present is not None:
                    present.update(seen.path for seen in found.files)
        except OSError as exc:
            if folder.inbox not in self._unavailable:
                self._unavailable.add(folder.inbox)
                log.error(
                    "folder_unavailable", path=folder.inbox, error=exc.strerror or str(exc),
                    hint="files there wait until the folder is back (is the share mounted?)",
                )
            return False
        finally:
            with contextlib.suppress(ValueError):  # still in its thread if we were cancelled
                parts.close()
        return True

    async def watch_loop(self) -> None:
        cfg = self._config.watch
        async for hints in watcher.watch(
            [f.inbox for f in self._config.folders], self._stopping,
            force_polling=cfg.force_polling, poll_delay_ms=cfg.poll_delay_ms,
            watching=self._watching,
        ):
            if hints.rescan and not self._listed_since(hints.watching_since):
                self._rescan_now.set()
            if not hints.paths:
                continue
            stats = await asyncio.to_thread(watcher.stat_all, hints.paths)
            now = self._clock()
            for path, seen in stats.items():
                if seen is None:
                    continue
                self._books.touched(path, now)
                self._books.consider(seen, now)

    def _listed_since(self, moment: float | None) -> bool:
        """A full listing began after `moment`: it found every file there was then."""
        return moment is not None and self._listed_at is not None and self._listed_at >= moment
