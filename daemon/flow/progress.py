"""What the daemon is doing, for people: STATUS= for systemctl, the heartbeat, SIGUSR1."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from ..aio import wait_event
from ..notify import Notifier
from ..timing import DEFAULT, MONOTONIC, Clock, Intervals
from .books import Books
from .intake import Intake
from .orgs import Org
from .settle import Settled, Settler
from .upload import OrgUploader

log = structlog.get_logger()


class Progress:
    def __init__(
        self,
        *,
        books: Books,
        settler: Settler,
        settled: Settled,
        intake: Intake,
        uploads: Mapping[str, OrgUploader],
        orgs: Mapping[str, Org],
        notify: Notifier,
        heartbeat_s: float,
        intervals: Intervals = DEFAULT,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._books = books
        self._settler = settler
        self._settled = settled
        self._intake = intake
        self._uploads = uploads
        self._orgs = orgs
        self._notify = notify
        self._heartbeat_s = heartbeat_s
        self._intervals = intervals
        self._clock = clock

    def figures(self) -> dict[str, Any]:
        """For STATUS= and the heartbeat: every file waiting, for whatever reason."""
        waiting = self._books.waiting(self._clock())
        return {
            "waiting": waiting.files,
            "waiting_why": waiting.by_why,
            "in_flight": sum(up.sending for up in self._uploads.values()),
            "done": self._books.counts.done,
            "failed": self._books.counts.failed,
            "oldest_waiting_s": waiting.oldest_s,
            "oldest_waiting_why": waiting.oldest_why,
            "paused": sorted(up.org for up in self._uploads.values() if up.paused),
            "unreachable": sorted(key for key, org in self._orgs.items() if org.unreachable),
        }

    def line(self) -> str:
        p = self.figures()
        line = f"{p['waiting']:,} waiting, {p['in_flight']:,} uploading, {p['done']:,} imported"
        if p["oldest_waiting_s"] is not None:
            line += f" (oldest {p['oldest_waiting_s']:.0f} s, {p['oldest_waiting_why']})"
        line += f", {p['failed']:,} failed since start"
        if p["paused"]:
            line += "; paused: " + ", ".join(p["paused"])
        if p["unreachable"]:
            line += "; Qonto unreachable: " + ", ".join(p["unreachable"])
        return line

    def status(self) -> None:
        """SIGUSR1: one `daemon_status` line with every stage's count."""
        log.info(
            "daemon_status",
            settling=len(self._settler),
            queued_for_inspection=len(self._settled),
            inspecting=self._intake.examining,
            waiting={up.org: up.waiting for up in self._uploads.values()},
            waiting_files=self._books.waiting(self._clock()).files,
            waiting_why=self._books.waiting(self._clock()).by_why,
            sending={up.org: up.sending for up in self._uploads.values()},
            failed=self._books.counts.failed,
            left_waiting=self._books.counts.left,
        )

    async def loop(self, stopping: asyncio.Event) -> None:
        """STATUS= every few seconds; a heartbeat line every `heartbeat_s` (a second
        or more: each comes on time, not at the next STATUS=)."""
        next_status = next_beat = self._clock()
        next_beat += self._heartbeat_s
        while True:
            wait_s = max(0.0, min(next_status, next_beat) - self._clock())
            if await wait_event(stopping, wait_s):
                return
            now = self._clock()
            if now >= next_status:
                next_status = now + self._intervals.status_s
                self._notify.status(self.line())
            if now >= next_beat:
                next_beat = now + self._heartbeat_s
                log.info("heartbeat", **self.figures())
