"""The daemon's lifecycle: start-up, the stages' tasks, a graceful stop.

startup: the journal's folder and lock, the journal, the parsers, the
pipeline of stages (flow/), reconciliation after a crash; run: every stage's
task in one TaskGroup, READY once every inbox was listed; shutdown: requests
in flight get `shutdown_grace_seconds`, then everything is cancelled, and
answers already received are recorded.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from . import __version__, signals
from .aio import wait_event, wait_first
from .config import Config
from .errors import AlreadyRunning, JournalError
from .flow.pipeline import Pipeline
from .flow.reading import pools
from .flow.reconcile import reconcile
from .journal import Journal
from .lock import InstanceLock
from .lock import holder as lock_holder
from .notify import Notifier
from .redact import Redactor
from .timing import DEFAULT, MONOTONIC, Intervals

log = structlog.get_logger()


class Service:
    def __init__(
        self,
        config: Config,
        *,
        once: bool = False,
        redact: Redactor | None = None,
        intervals: Intervals = DEFAULT,
    ) -> None:
        self.config = config
        self.once = once
        self.intervals = intervals
        # Shared with the log pipeline: OAuth tokens join it as they are issued.
        self._redact = redact if redact is not None else Redactor(config.secret_values())
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._notify = Notifier()
        self._main: asyncio.Task[Any] | None = None
        self.pipeline: Pipeline | None = None  # once started up
        self._working = False  # past start-up: the long-lived tasks run
        self._exit_code = 0

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

    def rescan(self) -> None:
        log.info("rescan_requested", signal="SIGHUP")
        if self.pipeline is not None:
            self.pipeline.discovery.rescan()

    def status(self) -> None:
        if self.pipeline is None or not self._working:
            log.info("daemon_status", starting=True)
        else:
            self.pipeline.progress.status()

    async def run(self) -> int:
        """Run until stopped (or, with once, until nothing is left); return the exit code."""
        self._main = asyncio.current_task()
        actions: dict[signal.Signals, Callable[[], None]] = {
            sig: functools.partial(self.request_stop, sig.name) for sig in signals.STOP
        }
        actions[signal.SIGHUP] = self.rescan
        actions[signal.SIGUSR1] = self.status
        done = asyncio.Event()
        with signals.handled(actions):
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._notify.feed_watchdog(done), name="watchdog")
                        try:
                            return await self._locked()
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

    async def _locked(self) -> int:
        """One daemon per journal: the lock beside it is held for the whole run."""
        cfg = self.config
        instance = InstanceLock(cfg.database)
        try:
            await asyncio.to_thread(os.makedirs, cfg.database.parent, 0o700, True)
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
            return await self._started()
        finally:
            instance.release()

    async def _started(self) -> int:
        cfg = self.config
        journal = await Journal.open(cfg.database)
        journal.stopping = self._stopping
        for token in await journal.refresh_tokens():  # from earlier runs: secrets too
            self._redact.add(token)
        parsers, rules = pools(cfg)
        try:
            async with aiohttp.ClientSession() as session:
                pipeline = self.pipeline = Pipeline(
                    cfg, journal=journal, session=session, parsers=parsers, rules=rules,
                    notify=self._notify, stopping=self._stopping, redact=self._redact,
                    once=self.once, intervals=self.intervals,
                )
                log.info(
                    "daemon_started", version=__version__, once=self.once,
                    folders=[str(f.inbox) for f in cfg.folders],
                    organizations=[o.login for o in cfg.organizations],
                    database=str(cfg.database),
                )
                for note in cfg.notes:
                    log.warning("config_warning", detail=note)
                oauth = any(o.oauth for o in cfg.organizations)
                if (exposed := await journal.exposed(oauth=oauth)) is not None:
                    log.warning("config_warning", detail=exposed)
                await reconcile(journal, cfg.folders, self._stopping)
                if not self._stopping.is_set():
                    self._working = True
                    await self._run_tasks(pipeline, journal)
                await pipeline.drain()
        finally:
            if parsers is not None:
                parsers.close()  # never wait for a parse
            if rules is not None:
                rules.close()
            await journal.close()
        counts = pipeline.books.counts
        log.info("daemon_stopped", failed=counts.failed, left_waiting=counts.left)
        if self.once and (counts.failed or counts.left):
            return max(1, self._exit_code)
        return self._exit_code

    async def _run_tasks(self, pipeline: Pipeline, journal: Journal) -> None:
        async with asyncio.TaskGroup() as tg:
            workers = [tg.create_task(c, name=n) for n, c in pipeline.tasks().items()]
            workers.append(tg.create_task(self._ready(pipeline), name="ready"))
            workers.append(tg.create_task(self._watch_journal(journal), name="journal"))
            if self.once:
                workers.append(tg.create_task(self._until_idle(pipeline), name="once"))
            tg.create_task(self._supervise(workers), name="supervise")

    async def _ready(self, pipeline: Pipeline) -> None:
        """READY=1 once the journal is open, start-up reconciled and every inbox listed."""
        await wait_first(pipeline.discovery.listed_once, self._stopping)
        if pipeline.discovery.listed_once.is_set():
            self._notify.ready(pipeline.progress.line())

    async def _watch_journal(self, journal: Journal) -> None:
        """Notice a journal deleted or replaced under the running daemon."""
        while not await wait_event(self._stopping, self.intervals.journal_check_s):
            if not await journal.in_place():
                log.critical(
                    "journal_lost", path=self.config.database,
                    error="the journal file was deleted or replaced while the daemon ran",
                    hint="the daemon stops; at its next start it opens the file now at "
                    "[database] path (a new, empty journal if there is none)",
                )
                self._exit_code = 1
                self.request_stop("journal_lost")
                return

    async def _until_idle(self, pipeline: Pipeline) -> None:
        """--once: stop when every file found at start has been dealt with, and every
        e-invoice asked for has been sent (or could not be: exit 1, said)."""
        await pipeline.discovery.listed_once.wait()
        while not self._stopping.is_set():
            if pipeline.idle:
                # The e-invoices its imports asked for go out before a run ends.
                if not await pipeline.einvoicing.send_before_exit(
                    self.config.unreachable_alert_s
                ):
                    self._exit_code = 1
                self.request_stop("once: nothing left to do")
                return
            await wait_event(self._stopping, self.intervals.idle_poll_s)

    async def _supervise(self, workers: list[asyncio.Task[None]]) -> None:
        """After a stop request, give requests in flight the grace period, then cancel."""
        await self._stopping.wait()
        deadline = MONOTONIC() + self.config.shutdown_grace_s
        forced: asyncio.Future[Any] = asyncio.ensure_future(self._forced.wait())
        try:
            pending: set[asyncio.Future[Any]] = {w for w in workers if not w.done()}
            while pending and not self._forced.is_set():
                remaining = deadline - MONOTONIC()
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
