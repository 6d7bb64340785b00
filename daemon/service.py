"""The daemon's lifecycle: start-up reconciliation, the long-lived tasks, graceful stop.

Tasks, all owned by one TaskGroup:
- rescan: lists every inbox at start and then periodically (the truth);
- watch: watchfiles events, hints that make pickup quick;
- settle: stats tracked files until they have held still for settle_s;
- intake: reads, hashes and inspects settled files, then queues or files them;
- one uploader per organization: packs, sends, retries, files the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from . import __version__, mover, qonto, signals, watcher
from .aio import wait_event, wait_first
from .config import Config, Folder
from .errors import AlreadyRunning, JournalError
from .flow.batcher import Limits
from .flow.einvoice import Einvoicing
from .flow.filing import Filing
from .flow.intake import Intake
from .flow.settle import Settler
from .flow.upload import OrgUploader
from .journal import Journal, State
from .lock import InstanceLock
from .lock import holder as lock_holder
from .notify import Notifier
from .oauth import TokenSource
from .parsers import ParserPool
from .qonto import QontoClient, RateLimiter, Slots
from .redact import Redactor

log = structlog.get_logger()

_JOURNAL_CHECK_S = 5.0
_STATUS_EVERY_S = 5.0
# Intake workers beyond the parsers: files that need no parse (images, plain
# reading and hashing) go on while every parser is busy.
_READERS = 2
# How long the first listing waits for the watcher to be in place (a missing inbox
# or a slow polling start must not hold it up).
_WATCHER_START_S = 1.0
_RESCAN_GAP_S = 1.0


class Service:
    def __init__(
        self, config: Config, *, once: bool = False, redact: Redactor | None = None
    ) -> None:
        self.config = config
        self.once = once
        # Shared with the log pipeline: OAuth tokens join it as they are issued.
        self._redact = redact if redact is not None else Redactor(config.secret_values())
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._rescan_now = asyncio.Event()
        self._settle_wake = asyncio.Event()
        self._settler = Settler(config.watch.settle_s, config.watch.unstable_warning_s)
        self._unavailable: set[Path] = set()
        self._folders = {f.inbox: f for f in config.folders}
        self._uploaders: dict[str, OrgUploader] = {}
        self._scanned_once = asyncio.Event()
        self._watching = asyncio.Event()
        self._listed_at: float | None = None  # when the latest full listing began
        self._notify = Notifier()
        self._started_at = time.monotonic()
        self._main: asyncio.Task[Any] | None = None
        self._working = False  # past start-up: the long-lived tasks run
        self._exit_code = 0

    # -- lifecycle -----------------------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        if self._stopping.is_set():
            log.warning("daemon_stopping", reason=reason, forced=True)
            self._forced.set()
            if not self._working and self._main is not None:
                self._main.cancel()  # still starting up: nothing in flight to wait for
            return
        log.info("daemon_stopping", reason=reason, grace_s=self.config.shutdown_grace_s)
        self._notify.stopping()
        self._stopping.set()

    @property
    def forced(self) -> bool:
        """A second stop request came: nothing more is waited for."""
        return self._forced.is_set()

    def _status(self) -> None:
        if not self._working:
            log.info("daemon_status", starting=True)
            return
        log.info(
            "daemon_status",
            settling=len(self._settler),
            queued_for_inspection=len(self._intake.queue),
            inspecting=self._intake.inspecting,
            waiting={up.org: up.waiting for up in self._uploaders.values()},
            sending={up.org: up.sending for up in self._uploaders.values()},
            failed=self._intake.failed_files,
            left_waiting=self._intake.left_files,
        )

    def _rescan_request(self) -> None:
        log.info("rescan_requested", signal="SIGHUP")
        self._rescan_now.set()

    async def run(self) -> int:
        """Run until stopped (or, with once, until nothing is left); return the exit code."""
        self._main = asyncio.current_task()
        actions: dict[signal.Signals, Callable[[], None]] = {
            sig: functools.partial(self.request_stop, sig.name) for sig in signals.STOP
        }
        actions[signal.SIGHUP] = self._rescan_request
        actions[signal.SIGUSR1] = self._status
        done = asyncio.Event()
        with signals.handled(actions):
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._notify.feed_watchdog(done), name="watchdog")
                        try:
                            return await self._run()
                        finally:
                            done.set()
                except BaseExceptionGroup as group:
                    # The watchdog never fails: what failed is the daemon's own run.
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            except asyncio.CancelledError:
                if not self._forced.is_set():
                    raise
                log.info("daemon_stopped", during="start-up")
                return self._exit_code
            finally:
                self._notify.close()

    async def _run(self) -> int:
        cfg = self.config
        instance = InstanceLock(cfg.database)
        try:
            await asyncio.to_thread(cfg.database.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                cfg.database, f"cannot create its folder: {exc.strerror or exc}",
                "create the folder, or let systemd make it (StateDirectory=)",
                temporary=exc.errno in (errno.ENOSPC, errno.EDQUOT),
            ) from None
        try:
            if not await asyncio.to_thread(instance.acquire):
                holder = await asyncio.to_thread(lock_holder, cfg.database)
                raise AlreadyRunning(
                    f"another daemon (pid {holder}) runs on the journal {cfg.database}: "
                    "one daemon per configuration"
                )
        except OSError as exc:
            raise JournalError(
                cfg.database, f"cannot take its lock {instance.path}: {exc.strerror or exc}",
                "give the daemon's user write access to the journal's folder",
            ) from None
        try:
            return await self._run_locked()
        finally:
            instance.release()

    async def _run_locked(self) -> int:
        cfg = self.config
        journal = await Journal.open(cfg.database)
        journal.stopping = self._stopping
        val = cfg.validation
        parsers = (
            ParserPool(val.parse_workers, val.parse_timeout_s, val.parse_memory_mb)
            if any(f.facturx != "off" for f in cfg.folders)
            else None
        )
        try:
            timeout = aiohttp.ClientTimeout(
                total=cfg.upload.timeout_s, sock_connect=cfg.upload.connect_timeout_s
            )
            async with aiohttp.ClientSession() as session:
                self._build(session, journal, timeout, parsers)
                log.info(
                    "daemon_started",
                    version=__version__,
                    once=self.once,
                    folders=[str(f.inbox) for f in cfg.folders],
                    organizations=[o.login for o in cfg.organizations],
                    database=str(cfg.database),
                )
                for note in cfg.notes:
                    log.warning("config_warning", detail=note)
                await self._reconcile(journal)
                if not self._stopping.is_set():
                    self._working = True
                    await self._run_tasks()
                for up in self._uploaders.values():
                    await up.drain()
        finally:
            if parsers is not None:
                parsers.close()  # never wait for a parse
            await journal.close()
        failed, left = self._intake.failed_files, self._intake.left_files
        log.info("daemon_stopped", failed=failed, left_waiting=left)
        if self.once and (failed or left):
            return max(1, self._exit_code)
        return self._exit_code

    def _build(
        self,
        session: aiohttp.ClientSession,
        journal: Journal,
        timeout: aiohttp.ClientTimeout,
        parsers: ParserPool | None,
    ) -> None:
        cfg = self.config
        self._filing = Filing(journal)
        self._journal = journal
        self._parsers = parsers
        slots = Slots(cfg.upload.concurrency)
        limiter = RateLimiter()
        redact = self._redact
        self._limits = Limits(
            max_request_bytes=cfg.upload.max_request_bytes, closing_bytes=qonto.body_size([])
        )
        self._intake = Intake(
            cfg, journal=journal, filing=self._filing, settler=self._settler,
            settle_wake=self._settle_wake, limits=self._limits, parsers=parsers, once=self.once,
        )
        self._intake.uploaders = self._uploaders
        clients = {
            org.key: QontoClient(
                session, org, timeout, redact,
                TokenSource(org, session, journal, redact, timeout) if org.oauth else None,
                limiter,
            )
            for org in cfg.organizations
        }
        self._einvoicing = Einvoicing(
            journal=journal, clients=clients, orgs=self._uploaders, settings=cfg.einvoicing,
            upload=cfg.upload, stopping=self._stopping,
        )
        for org in cfg.organizations:
            self._uploaders[org.key] = OrgUploader(
                org=org.key,
                client=clients[org.key],
                journal=journal,
                filing=self._filing,
                settings=cfg.upload,
                limits=self._limits,
                slots=slots,
                stopping=self._stopping,
                finished=self._intake.finished,
                give_up_on_auth=self.once,
                einvoices_recorded=self._einvoicing.wake,
            )

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as tg:
            workers = [
                tg.create_task(self._rescan_loop(), name="rescan"),
                tg.create_task(self._settle_loop(), name="settle"),
            ]
            workers += [
                tg.create_task(self._intake.run(self._stopping), name=f"intake-{n}")
                for n in range(self.config.validation.parse_workers + _READERS)
            ]
            if not self.once:
                workers.append(tg.create_task(self._watch_loop(), name="watch"))
            else:
                workers.append(tg.create_task(self._until_idle(), name="once"))
            for up in self._uploaders.values():
                workers.append(tg.create_task(up.run(), name=f"upload-{up.org}"))
            workers.append(tg.create_task(self._journal_loop(), name="journal"))
            if self._parsers is not None:
                # Supervised too: a stop is not held up by a parser slow to start.
                workers.append(tg.create_task(self._parsers.warm(), name="parsers"))
            if not self.once:
                workers.append(tg.create_task(self._einvoicing.run(), name="einvoicing"))
            workers.append(tg.create_task(
                self._journal.keep_committed(self._stopping), name="commits"
            ))
            workers.append(tg.create_task(self._progress_loop(), name="progress"))
            tg.create_task(self._supervise(workers), name="supervise")

    def _progress(self) -> dict[str, Any]:
        """What the daemon is doing, for STATUS=, the heartbeat and SIGUSR1."""
        now = time.monotonic()
        oldest = min(
            (t for up in self._uploaders.values() if (t := up.oldest_queued_at) is not None),
            default=None,
        )
        return {
            "waiting": sum(up.waiting for up in self._uploaders.values()),
            "in_flight": sum(up.sending for up in self._uploaders.values()),
            "done": self._filing.done_count,
            "failed": self._filing.failed_count,
            "oldest_waiting_s": None if oldest is None else round(now - oldest, 1),
            "paused": sorted(up.org for up in self._uploaders.values() if up.paused),
        }

    def _status_line(self) -> str:
        p = self._progress()
        line = f"{p['waiting']:,} waiting, {p['in_flight']:,} uploading, {p['done']:,} imported"
        line += f", {p['failed']:,} failed since start"
        if p["paused"]:
            line += "; paused: " + ", ".join(p["paused"])
        return line

    async def _progress_loop(self) -> None:
        """STATUS= for `systemctl status` every few seconds; a heartbeat line now and then."""
        next_beat = time.monotonic() + self.config.heartbeat_s
        while not await wait_event(self._stopping, _STATUS_EVERY_S):
            self._notify.status(self._status_line())
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.config.heartbeat_s
                log.info("heartbeat", **self._progress())

    async def _journal_loop(self) -> None:
        """Notice a journal deleted or replaced under the running daemon."""
        while not await wait_event(self._stopping, _JOURNAL_CHECK_S):
            if not await self._journal.in_place():
                log.critical(
                    "journal_lost", path=self.config.database,
                    error="the journal file was deleted or replaced while the daemon ran",
                    hint="the daemon stops; at its next start it opens the file now at "
                    "[database] path (a new, empty journal if there is none)",
                )
                self._exit_code = 1
                self.request_stop("journal_lost")
                return

    async def _supervise(self, workers: list[asyncio.Task[None]]) -> None:
        """After a stop request, give requests in flight the grace period, then cancel."""
        await self._stopping.wait()
        deadline = time.monotonic() + self.config.shutdown_grace_s
        forced: asyncio.Future[Any] = asyncio.ensure_future(self._forced.wait())
        try:
            pending: set[asyncio.Future[Any]] = {w for w in workers if not w.done()}
            while pending and not self._forced.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                _, pending = await asyncio.wait(
                    pending | {forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(forced)
        finally:
            forced.cancel()
        late = [w for w in workers if not w.done()]
        if late:
            log.warning("daemon_cancelling", tasks=[w.get_name() for w in late])
        for w in late:
            w.cancel()

    async def _until_idle(self) -> None:
        """--once: stop when every file found at start has been dealt with."""
        await self._scanned_once.wait()
        while not self._stopping.is_set():
            if self._intake.idle and all(u.idle for u in self._uploaders.values()):
                self.request_stop("once: nothing left to do")
                return
            await wait_event(self._stopping, 0.05)

    # -- start-up ------------------------------------------------------------------

    async def _reconcile(self, journal: Journal) -> None:
        """Make the journal and the folders agree after a crash."""
        requeued = await journal.requeue_interrupted()
        marked = removed = 0
        for each in self.config.folders:
            for directory in (each.done, each.failed):
                removed += await asyncio.to_thread(mover.clean_temporaries, directory)
        for record in await journal.in_state(State.IMPORTED):
            if self._stopping.is_set():
                return  # a stop during start-up: what is left is done at the next start
            folder = self._folders.get(record.path.parent)
            if folder is None or await asyncio.to_thread(os.path.lexists, record.path):
                continue  # still in its inbox: the scan finds it and moves it without uploading
            found = await self._find_copy(folder.done, record.path.name, record.sha256, record.size)
            if found is not None:
                await journal.mark_done(record.org, record.sha256, found)
                marked += 1
        if requeued or marked or removed:
            log.info(
                "journal_reconciled", requeued=requeued, marked_done=marked,
                temporaries_removed=removed,
            )

    async def _find_copy(self, directory: Path, name: str, sha256: str, size: int) -> Path | None:
        """mover.find_copy, one file per thread call, so that a stop is heard between files."""
        candidates = await asyncio.to_thread(mover.copy_candidates, directory, name, size)
        for candidate in candidates:
            if self._stopping.is_set():
                return None
            log.debug("copy_hashing", path=candidate, looking_for=name)
            if await asyncio.to_thread(mover.sha256_of, candidate) == sha256:
                return candidate
        return None

    # -- discovery -----------------------------------------------------------------

    async def _rescan_loop(self) -> None:
        if not self.once:
            # Listing once the watcher is in place spares the second listing its
            # start would ask for (20,000 files take a second).
            await wait_first(self._stopping, self._watching, timeout_s=_WATCHER_START_S)
        while not self._stopping.is_set():
            # Cleared before listing: a request made during the listing gets its own.
            self._rescan_now.clear()
            began = self._listed_at = time.monotonic()
            listed = [await self._scan(folder) for folder in self.config.folders]
            if not all(listed):
                self._listed_at = None  # an inbox was missed: it proves nothing
            ended = time.monotonic()
            if not self._scanned_once.is_set():
                self._scanned_once.set()
                # The journal is open, start-up is reconciled, every inbox was listed
                # and the watcher is starting: from here on files are taken.
                self._notify.ready(self._status_line())
            if self.once:
                return
            await wait_first(
                self._stopping, self._rescan_now, timeout_s=self.config.watch.rescan_interval_s
            )
            # Asked again at once (a name that is not UTF-8 being written asks after
            # every event): listings stay at least as far apart as one takes, and 1 s.
            rest_s = max(_RESCAN_GAP_S, ended - began) - (time.monotonic() - ended)
            if rest_s > 0:
                await wait_event(self._stopping, rest_s)

    async def _scan(self, folder: Folder) -> bool:
        """List one inbox; False when it could not be listed to the end."""
        parts = watcher.scan_parts(folder.inbox)
        try:
            while (found := await asyncio.to_thread(next, parts, None)) is not None:
                if folder.inbox in self._unavailable:
                    self._unavailable.discard(folder.inbox)
                    log.info("folder_available", path=folder.inbox)
                now = time.monotonic()
                for skipped in found.skipped:
                    self._intake.warn_once(
                        skipped.path, "file_skipped", f"{skipped.what}, not a regular file"
                    )
                for seen in found.files:
                    self._intake.consider(seen, now)
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

    async def _watch_loop(self) -> None:
        cfg = self.config.watch
        async for hints in watcher.watch(
            [f.inbox for f in self.config.folders], self._stopping,
            force_polling=cfg.force_polling, poll_delay_ms=cfg.poll_delay_ms,
            watching=self._watching,
        ):
            if hints.rescan and not self._listed_since(hints.watching_since):
                self._rescan_now.set()
            if not hints.paths:
                continue
            stats = await asyncio.to_thread(watcher.stat_all, hints.paths)
            now = time.monotonic()
            for path, seen in stats.items():
                if seen is None:
                    continue
                self._settler.touched(path, now)
                self._intake.consider(seen, now)

    def _listed_since(self, moment: float | None) -> bool:
        """A full listing began after `moment`: it found every file there was then."""
        return moment is not None and self._listed_at is not None and self._listed_at >= moment

    async def _settle_loop(self) -> None:
        while not self._stopping.is_set():
            due_s = self._settler.next_due(time.monotonic())
            self._settle_wake.clear()
            if due_s is None or due_s > 0:
                await wait_first(self._stopping, self._settle_wake, timeout_s=due_s)
                continue
            stats = await asyncio.to_thread(
                watcher.stat_all, self._settler.due(time.monotonic())
            )
            now = time.monotonic()
            for path, seen in stats.items():
                if seen is None:
                    self._settler.forget(path)
                    self._intake.release(path)
                else:
                    self._settler.observe(seen, now)
            for seen in self._settler.settled(now):
                self._intake.queue.put(seen)
            for path, age_s in self._settler.unstable(now):
                log.warning(
                    "file_unstable", path=path, changing_for_s=round(age_s),
                    hint="still being written; it is sent once it stops changing",
                )
