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
import functools
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from . import __version__, inspect, mover, qonto, signals, watcher
from .aio import wait_event, wait_first
from .batcher import Limits
from .config import Config, Folder
from .errors import FileChanged, JournalUnavailable, UnsafeFile
from .filing import Filing
from .identity import Identity
from .journal import DONE, FAILED, IMPORTED, QUEUED, SENDING, Journal
from .qonto import QontoClient
from .redact import Redactor
from .settle import Settler, Unfinished
from .uploader import CHANGED, LEFT, OrgUploader, Pending
from .uploader import FAILED as UPLOAD_FAILED
from .uploader import IMPORTED as UPLOAD_IMPORTED

log = structlog.get_logger()

_JOURNAL_CHECK_S = 5.0


class Service:
    def __init__(self, config: Config, *, once: bool = False) -> None:
        self.config = config
        self.once = once
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._rescan_now = asyncio.Event()
        self._settle_wake = asyncio.Event()
        self._settler = Settler(config.watch.settle_s, config.watch.unstable_warning_s)
        self._unfinished = Unfinished(
            config.watch.incomplete_fail_s, recheck_s=max(config.watch.settle_s, 1.0)
        )
        self._intake: asyncio.Queue[watcher.Seen] = asyncio.Queue()
        self._active: set[Path] = set()  # settling, being inspected, waiting or sending
        # Files whose content is already on its way from another file (key): they wait.
        self._twins: dict[Path, list[Path]] = defaultdict(list)
        self._warned: dict[Path, str] = {}
        self._unavailable: set[Path] = set()
        self._folders = {f.inbox: f for f in config.folders}
        self._uploaders: dict[str, OrgUploader] = {}
        self._scanned_once = asyncio.Event()
        self._inspecting = 0
        self.failed_files = 0
        self.left_files = 0
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
        self._stopping.set()

    @property
    def forced(self) -> bool:
        """A second stop request came: nothing more is waited for."""
        return self._forced.is_set()

    def _status(self) -> None:
        log.info(
            "daemon_status",
            settling=len(self._settler),
            inspecting=self._inspecting,
            waiting={up.org: up.waiting for up in self._uploaders.values()},
            sending={up.org: up.sending for up in self._uploaders.values()},
            failed=self.failed_files,
            left_waiting=self.left_files,
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
        with signals.handled(actions):
            try:
                return await self._run()
            except asyncio.CancelledError:
                if not self._forced.is_set():
                    raise
                log.info("daemon_stopped", during="start-up")
                return self._exit_code

    async def _run(self) -> int:
        cfg = self.config
        journal = await Journal.open(cfg.database)
        journal.stopping = self._stopping
        try:
            timeout = aiohttp.ClientTimeout(
                total=cfg.upload.timeout_s, sock_connect=cfg.upload.connect_timeout_s
            )
            async with aiohttp.ClientSession() as session:
                self._build_uploaders(session, journal, timeout)
                log.info(
                    "daemon_started",
                    version=__version__,
                    once=self.once,
                    folders=[str(f.inbox) for f in cfg.folders],
                    organizations=[o.login for o in cfg.organizations],
                    database=str(cfg.database),
                )
                await self._reconcile(journal)
                if not self._stopping.is_set():
                    self._working = True
                    await self._run_tasks()
                for up in self._uploaders.values():
                    await up.drain()
        finally:
            await journal.close()
        counts = {"failed": self.failed_files, "left_waiting": self.left_files}
        log.info("daemon_stopped", **counts)
        if self.once and (self.failed_files or self.left_files):
            return max(1, self._exit_code)
        return self._exit_code

    def _build_uploaders(
        self, session: aiohttp.ClientSession, journal: Journal, timeout: aiohttp.ClientTimeout
    ) -> None:
        cfg = self.config
        self._filing = Filing(journal)
        self._journal = journal
        slots = asyncio.Semaphore(cfg.upload.concurrency)
        redact = Redactor(cfg.secret_values())
        self._limits = Limits(
            max_request_bytes=cfg.upload.max_request_bytes, closing_bytes=qonto.body_size([])
        )
        for org in cfg.organizations:
            self._uploaders[org.key] = OrgUploader(
                org=org.key,
                client=QontoClient(session, org, timeout, redact),
                journal=journal,
                filing=self._filing,
                settings=cfg.upload,
                limits=self._limits,
                slots=slots,
                stopping=self._stopping,
                finished=self._finished,
                give_up_on_auth=self.once,
            )

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as tg:
            workers = [
                tg.create_task(self._rescan_loop(), name="rescan"),
                tg.create_task(self._settle_loop(), name="settle"),
                tg.create_task(self._intake_loop(), name="intake"),
            ]
            if not self.once:
                workers.append(tg.create_task(self._watch_loop(), name="watch"))
            else:
                workers.append(tg.create_task(self._until_idle(), name="once"))
            for up in self._uploaders.values():
                workers.append(tg.create_task(up.run(), name=f"upload-{up.org}"))
            workers.append(tg.create_task(self._journal_loop(), name="journal"))
            tg.create_task(self._supervise(workers), name="supervise")

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
            if (
                not self._active
                and self._intake.empty()
                and self._inspecting == 0
                and all(u.idle for u in self._uploaders.values())
            ):
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
        for record in await journal.in_state(IMPORTED):
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
            if await asyncio.to_thread(mover.sha256_of, candidate) == sha256:
                return candidate
        return None

    # -- discovery -----------------------------------------------------------------

    async def _rescan_loop(self) -> None:
        while not self._stopping.is_set():
            for folder in self.config.folders:
                await self._scan(folder)
            self._scanned_once.set()
            self._rescan_now.clear()
            if self.once:
                return
            await wait_first(
                self._stopping, self._rescan_now, timeout_s=self.config.watch.rescan_interval_s
            )

    async def _scan(self, folder: Folder) -> None:
        try:
            found = await asyncio.to_thread(watcher.scan, folder.inbox)
        except OSError as exc:
            if folder.inbox not in self._unavailable:
                self._unavailable.add(folder.inbox)
                log.error(
                    "folder_unavailable", path=folder.inbox, error=exc.strerror or str(exc),
                    hint="files there wait until the folder is back (is the share mounted?)",
                )
            return
        if folder.inbox in self._unavailable:
            self._unavailable.discard(folder.inbox)
            log.info("folder_available", path=folder.inbox)
        now = time.monotonic()
        for skipped in found.skipped:
            self._warn_once(skipped.path, "file_skipped", f"{skipped.what}, not a regular file")
        for seen in found.files:
            self._consider(seen, now)

    def _consider(self, seen: watcher.Seen, now: float) -> None:
        if seen.path in self._settler:
            self._settler.observe(seen, now)
        elif seen.path not in self._active:
            self._active.add(seen.path)
            self._settler.observe(seen, now)
            self._settle_wake.set()

    async def _watch_loop(self) -> None:
        cfg = self.config.watch
        async for hints in watcher.watch(
            [f.inbox for f in self.config.folders], self._stopping,
            force_polling=cfg.force_polling, poll_delay_ms=cfg.poll_delay_ms,
        ):
            if hints.rescan:
                self._rescan_now.set()
            if not hints.paths:
                continue
            stats = await asyncio.to_thread(watcher.stat_all, hints.paths)
            now = time.monotonic()
            for path, seen in stats.items():
                if seen is None:
                    continue
                self._settler.touched(path, now)
                self._consider(seen, now)

    async def _settle_loop(self) -> None:
        while not self._stopping.is_set():
            due_s = self._settler.next_due(time.monotonic())
            self._settle_wake.clear()
            if due_s is None or due_s > 0:
                await wait_first(self._stopping, self._settle_wake, timeout_s=due_s)
                continue
            stats = await asyncio.to_thread(watcher.stat_all, self._settler.paths())
            now = time.monotonic()
            for path, seen in stats.items():
                if seen is None:
                    self._settler.forget(path)
                    self._release(path)
                else:
                    self._settler.observe(seen, now)
            for seen in self._settler.settled(now):
                self._intake.put_nowait(seen)
            for path, age_s in self._settler.unstable(now):
                log.warning(
                    "file_unstable", path=path, changing_for_s=round(age_s),
                    hint="still being written; it is sent once it stops changing",
                )

    # -- intake --------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        while not self._stopping.is_set():
            get = asyncio.ensure_future(self._intake.get())
            await wait_first(self._stopping, get)
            if not get.done():
                get.cancel()
                return
            seen = get.result()
            self._inspecting += 1
            try:
                await self._take(seen)
            except JournalUnavailable:
                self._release(seen.path, left=True)  # stopping with a full disk: next time
                return
            finally:
                self._inspecting -= 1

    async def _take(self, seen: watcher.Seen) -> None:
        """Inspect one settled file, then file it or queue it. One file's trouble stays its own."""
        path = seen.path
        folder = self._folders[path.parent]
        org = folder.org.key
        limit = self.config.upload.max_file_bytes
        if self._unfinished.unchanged(seen, time.monotonic()):
            self._look_again(seen)  # still incomplete, still the same: nothing to read
            return
        try:
            content = await asyncio.to_thread(inspect.read_regular, path, limit)
        except FileNotFoundError:
            self._filing.forget(path)
            self._release(path)
            return
        except FileChanged:
            self._recheck(path)
            return
        except UnsafeFile as exc:
            self._release(path)
            self._warn_once(path, "file_skipped", str(exc))
            return
        except OSError as exc:
            self._release(path, left=True)
            self._warn_once(
                path, "file_unreadable", exc.strerror or str(exc),
                hint="check the file's permissions; it is tried again at the next scan",
            )
            return
        if content.identity != seen.identity:
            self._recheck(path)  # written to again: settle afresh
            return
        self._warned.pop(path, None)
        name = qonto.upload_name(path.name)
        found = await asyncio.to_thread(
            inspect.examine, content, path.name, limit, self._fits_request(name)
        )
        judged = found.identity
        record = await self._journal.get(org, found.sha256)
        # The journal already holds this very file (a kill, or a folder that refused the move).
        here = record is not None and record.path == path
        try:
            if found.problem is not None:
                await self._fail(folder, path, found, name, found.problem, recovered=here)
                return
            if record is not None and record.invoice_id and record.state in (IMPORTED, DONE):
                await self._file_known(
                    folder, path, record.path, found.sha256, record.invoice_id, judged
                )
                return
            if record is not None and record.state == FAILED and here:
                # Rejected before, and failed/ refused it: move it, never send it again.
                reason, _, detail = (record.last_error or "rejected: ").partition(": ")
                problem = inspect.Problem(reason, detail)
                await self._fail(folder, path, found, name, problem, recovered=True)
                return
            if not found.complete:
                await self._incomplete(folder, path, found, name)
                return
        except FileChanged:
            self._recheck(path)
            return
        self._unfinished.forget(path)
        if (
            record is not None
            and record.state in (QUEUED, SENDING)
            and record.path != path
            and record.path in self._active
        ):
            # The same content is already on its way from another file: wait for it.
            self._twins[record.path].append(path)
            log.info("file_queued", path=path, sha256=found.sha256, org=org, twin_of=record.path)
            return
        record = await self._journal.enqueue(org, found.sha256, path, name, found.size)
        assert found.kind is not None
        content_type = inspect.CONTENT_TYPES[found.kind]
        pending = Pending(
            folder=folder,
            path=path,
            sha256=found.sha256,
            file_name=name,
            name_key=qonto.name_key(name),
            identity=judged,
            content_type=content_type,
            wire_bytes=found.size + qonto.part_overhead(name, content_type),
        )
        log.info(
            "file_queued", path=path, sha256=found.sha256, org=org, size=found.size,
            type=found.kind, facturx=found.facturx,
        )
        self._uploaders[org].add(pending)

    async def _fail(
        self,
        folder: Folder,
        path: Path,
        found: inspect.Inspection,
        name: str,
        problem: inspect.Problem,
        *,
        recovered: bool,
    ) -> None:
        await self._filing.failed(
            folder, path, sha256=found.sha256, file_name=name, size=found.size,
            reason=problem.reason, detail=problem.detail, expect=found.identity,
            recovered=recovered,
        )
        self._release(path, failed=True)

    async def _incomplete(
        self, folder: Folder, path: Path, found: inspect.Inspection, name: str
    ) -> None:
        """A file that held still but is not whole: wait for its writer, then give up."""
        assert found.kind is not None
        now = time.monotonic()
        first, waited_s = self._unfinished.note(path, found.identity, now)
        if first:
            log.info(
                "file_incomplete", path=path, sha256=found.sha256, org=folder.org.key,
                type=found.kind, size=found.size,
                hint="the file does not end like a complete "
                f"{found.kind.upper()}: it waits for its writer to finish (at most "
                f"{self._unfinished.fail_s:g} s unchanged, then it goes to failed/ as truncated)",
            )
        if self.once:
            self._release(path, left=True)
        elif waited_s >= self._unfinished.fail_s:
            problem = inspect.truncated(found.kind, waited_s)
            await self._fail(folder, path, found, name, problem, recovered=False)
        else:
            self._look_again(watcher.Seen(path, found.identity))

    def _look_again(self, seen: watcher.Seen) -> None:
        self._settler.hold(seen, self._unfinished.next_look(seen.path, time.monotonic()))
        self._settle_wake.set()

    def _fits_request(self, name: str) -> int:
        """The largest file that fits in one request under this name."""
        framing = self._limits.closing_bytes + qonto.part_overhead(name, "application/pdf")
        return self.config.upload.max_request_bytes - framing

    async def _file_known(
        self,
        folder: Folder,
        path: Path,
        known_path: Path,
        sha256: str,
        invoice_id: str,
        judged: Identity,
    ) -> None:
        """Content that already has an invoice_id goes to done/ without another upload."""
        if known_path == path:  # imported, but not moved yet (crash, permissions)
            dest = await self._filing.done(
                folder, path, sha256, invoice_id, expect=judged, recovered=True
            )
        else:
            dest = await self._filing.done(
                folder, path, sha256, invoice_id, expect=judged, event="file_duplicate",
                duplicate_of=str(known_path),
            )
        self._release(path, left=dest is None)

    def _finished(self, pending: Pending, outcome: str, _detail: str | None) -> None:
        """Called by an uploader when a file leaves its hands."""
        if outcome == CHANGED:
            self._recheck(pending.path)
            self._release_twins(pending.path, left=False)
        else:
            assert outcome in (UPLOAD_IMPORTED, UPLOAD_FAILED, LEFT)
            self._release(
                pending.path, failed=outcome == UPLOAD_FAILED, left=outcome == LEFT
            )

    def _recheck(self, path: Path) -> None:
        """Settle and inspect a file again (it changed, or its twin was just handled)."""
        self._active.add(path)
        self._settler.track(path, time.monotonic())
        self._settle_wake.set()

    def _release(self, path: Path, *, failed: bool = False, left: bool = False) -> None:
        """A file leaves the daemon's hands: filed, dropped, or left for the next run."""
        if path in self._active:  # counted once, however many parts report it
            self.failed_files += failed
            self.left_files += left
        self._active.discard(path)
        self._unfinished.forget(path)
        self._release_twins(path, left=left)

    def _release_twins(self, path: Path, *, left: bool) -> None:
        # Files that waited for this one are looked at again: now they are duplicates.
        for twin in self._twins.pop(path, []):
            if left:
                self._release(twin, left=True)
            else:
                self._recheck(twin)

    def _warn_once(self, path: Path, event: str, detail: str, **fields: object) -> None:
        if self._warned.get(path) != detail:
            self._warned[path] = detail
            log.warning(event, path=path, detail=detail, **fields)
