"""From a settled file to a decision: failed/, done/ (content already known), or the upload queue.

The intake keeps the books of every file in the daemon's hands (`active`),
takes settled files from a queue that is fair across folders, and inspects
several at once: reading and hashing in threads, Factur-X parsing in the
parser workers. Decisions that depend on the journal (the same content twice,
the same invoice number twice) are taken one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from pathlib import Path

import structlog

from .. import qonto, watcher
from ..aio import wait_first
from ..config import Config, Folder
from ..errors import FileChanged, JournalUnavailable, UnsafeFile
from ..identity import Identity
from ..invoice_xml import Invoice
from ..journal import Journal, Record, State
from ..parsers import ParserPool, ParserUnavailable
from . import examine as inspect
from .batcher import Limits
from .facturx import duplicate_number, facturx_verdict
from .filing import Filing
from .settle import Settler, Unfinished
from .upload import CHANGED, LEFT, OrgUploader, Pending
from .upload import FAILED as UPLOAD_FAILED
from .upload import IMPORTED as UPLOAD_IMPORTED

log = structlog.get_logger()


_PARSER_RETRY_S = 30.0
# A file too large for Qonto is still moved into failed/ when that is a copy,
# up to this many times the file limit; beyond, it stays in the inbox.
_MAX_COPY_FACTOR = 10


class _Stopped(Exception):
    """The daemon stops while a file is being inspected: it is left for the next start."""


class FairQueue:
    """Settled files, handed out in turn from each folder: no backlog starves another folder."""

    def __init__(self) -> None:
        self._lanes: dict[Path, deque[watcher.Seen]] = {}
        self._turn: deque[Path] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def put(self, seen: watcher.Seen) -> None:
        folder = seen.path.parent
        lane = self._lanes.get(folder)
        if lane is None:
            lane = self._lanes[folder] = deque()
            self._turn.append(folder)
        lane.append(seen)
        self._ready.set()

    def get_nowait(self) -> watcher.Seen | None:
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

    async def get(self, stopping: asyncio.Event) -> watcher.Seen | None:
        """The next file, or None once the daemon stops."""
        while not stopping.is_set():
            seen = self.get_nowait()
            if seen is not None:
                return seen
            self._ready.clear()
            await wait_first(self._ready, stopping)
        return None


class Intake:
    def __init__(
        self,
        config: Config,
        *,
        journal: Journal,
        filing: Filing,
        settler: Settler,
        settle_wake: asyncio.Event,
        limits: Limits,
        parsers: ParserPool | None,
        once: bool,
    ) -> None:
        self.config = config
        self.once = once
        self.uploaders: dict[str, OrgUploader] = {}
        self._journal = journal
        self._filing = filing
        self._settler = settler
        self._settle_wake = settle_wake
        self._limits = limits
        self._parsers = parsers
        self._folders = {f.inbox: f for f in config.folders}
        self._unfinished = Unfinished(
            config.watch.incomplete_fail_s, recheck_s=max(config.watch.settle_s, 1.0)
        )
        self.queue = FairQueue()
        self.active: set[Path] = set()  # settling, being inspected, waiting or sending
        # Files whose content is already on its way from another file (key): they wait.
        self._twins: dict[Path, list[Path]] = defaultdict(list)
        self._warned: dict[Path, str] = {}
        # Files too large to copy into failed/, left in the inbox with their report.
        self._kept: dict[Path, Identity] = {}
        self._decide = asyncio.Lock()  # journal-dependent decisions, one at a time
        self._stopping = asyncio.Event()  # the service's, once run() starts
        self.inspecting = 0
        self.failed_files = 0
        self.left_files = 0

    @property
    def idle(self) -> bool:
        return not self.active and not len(self.queue) and self.inspecting == 0

    # -- the books ----------------------------------------------------------------

    def consider(self, seen: watcher.Seen, now: float) -> None:
        """A file seen by a scan or the watcher: follow it until it settles."""
        if seen.path in self._settler:
            self._settler.observe(seen, now)
        elif seen.path not in self.active:
            self.active.add(seen.path)
            self._settler.observe(seen, now)
            self._settle_wake.set()

    def finished(self, pending: Pending, outcome: str, _detail: str | None) -> None:
        """Called by an uploader when a file leaves its hands."""
        if outcome == CHANGED:
            self.recheck(pending.path)
            self._release_twins(pending.path, left=False)
        else:
            assert outcome in (UPLOAD_IMPORTED, UPLOAD_FAILED, LEFT)
            self.release(pending.path, failed=outcome == UPLOAD_FAILED, left=outcome == LEFT)

    def recheck(self, path: Path) -> None:
        """Settle and inspect a file again (it changed, or its twin was just handled)."""
        self.active.add(path)
        self._settler.track(path, time.monotonic())
        self._settle_wake.set()

    def release(self, path: Path, *, failed: bool = False, left: bool = False) -> None:
        """A file leaves the daemon's hands: filed, dropped, or left for the next run."""
        if path in self.active:  # counted once, however many parts report it
            self.failed_files += failed
            self.left_files += left
        self.active.discard(path)
        self._unfinished.forget(path)
        self._release_twins(path, left=left)

    def _release_twins(self, path: Path, *, left: bool) -> None:
        # Files that waited for this one are looked at again: now they are duplicates.
        for twin in self._twins.pop(path, []):
            if left:
                self.release(twin, left=True)
            else:
                self.recheck(twin)

    def warn_once(self, path: Path, event: str, detail: str, **fields: object) -> None:
        if self._warned.get(path) != detail:
            self._warned[path] = detail
            log.warning(event, path=path, detail=detail, **fields)

    # -- the work -----------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """One of several intake workers: take settled files until the daemon stops."""
        self._stopping = stopping
        while (seen := await self.queue.get(stopping)) is not None:
            self.inspecting += 1
            try:
                await self.take(seen)
            except JournalUnavailable:
                self.release(seen.path, left=True)  # stopping with a full disk: next time
                return
            finally:
                self.inspecting -= 1

    async def take(self, seen: watcher.Seen) -> None:
        """Inspect one settled file, then file it or queue it. One file's trouble stays its own."""
        path = seen.path
        folder = self._folders[path.parent]
        name = qonto.upload_name(path.name)
        if self._unfinished.unchanged(seen, time.monotonic()):
            self._look_again(seen)  # still incomplete, still the same: nothing to read
            return
        limit = min(self.config.upload.max_file_bytes, self._fits_request(name))
        if seen.identity.size > limit:
            await self._too_large(folder, seen, name, limit)
            return
        content = await self._read(seen)
        if content is None:
            return
        found = await asyncio.to_thread(inspect.examine, content, path.name, limit, limit)
        try:
            invoice, unreadable = await self._parse(folder, path, found, content)
        except _Stopped:
            self.release(path, left=True)
            return
        except ParserUnavailable as exc:
            # Not the file's fault: it waits, and is looked at again in a while.
            log.error("parser_unavailable", path=path, error=str(exc),
                      hint="check memory and processes on this machine; the file waits")
            self._settler.hold(seen, time.monotonic() + _PARSER_RETRY_S)
            self._settle_wake.set()
            return
        try:
            await self._decide_and_file(folder, path, name, found, invoice, unreadable)
        except FileChanged:
            self.recheck(path)

    async def _read(self, seen: watcher.Seen) -> inspect.Content | None:
        path = seen.path
        try:
            content = await asyncio.to_thread(
                inspect.read_regular, path, self.config.upload.max_file_bytes
            )
        except FileNotFoundError:
            self._filing.forget(path)
            self.release(path)
            return None
        except FileChanged:
            self.recheck(path)
            return None
        except UnsafeFile as exc:
            self.release(path)
            self.warn_once(path, "file_skipped", str(exc))
            return None
        except OSError as exc:
            self.release(path, left=True)
            self.warn_once(
                path, "file_unreadable", exc.strerror or str(exc),
                hint="check the file's permissions; it is tried again at the next scan",
            )
            return None
        if content.identity != seen.identity:
            self.recheck(path)  # written to again: settle afresh
            return None
        self._warned.pop(path, None)
        return content

    async def _parse(
        self, folder: Folder, path: Path, found: inspect.Inspection, content: inspect.Content
    ) -> tuple[Invoice | None, str | None]:
        """The invoice XML of a complete PDF (in a parser worker), or why it could not be read."""
        if (
            self._parsers is None
            or folder.facturx == "off"
            or found.problem is not None
            or found.kind != inspect.PDF
            or not found.complete
        ):
            return None, None
        log.debug("file_parsing", path=path, sha256=found.sha256)
        found_xml = await self._parsers.read(content.data, self._stopping)
        if found_xml is None:
            raise _Stopped
        if isinstance(found_xml, str):
            return None, found_xml
        return found_xml, None

    async def _decide_and_file(
        self,
        folder: Folder,
        path: Path,
        name: str,
        found: inspect.Inspection,
        invoice: Invoice | None,
        unreadable: str | None,
    ) -> None:
        """Decide under the lock (queueing, twins); file away outside it (moves can be slow)."""
        org = folder.org.key
        async with self._decide:
            record = await self._journal.get(org, found.sha256)
            # The journal already holds this very file (a kill, or a folder that refused it).
            here = record is not None and record.path == path
            known = (
                record is not None and record.invoice_id
                and record.state in (State.IMPORTED, State.DONE)
            )
            refused = record is not None and record.state == State.FAILED and here
            problem: inspect.Problem | None = found.problem
            if problem is None and not known and not refused and found.complete:
                problem, warning = self._verdict(folder, found, invoice, unreadable)
                if problem is None:
                    problem = await self._number_taken(folder, path, found, invoice)
                if problem is None:
                    if self._queue_or_twin(folder, path, found, record):
                        await self._enqueue(folder, path, name, found, invoice, warning)
                    return
        if found.problem is not None:
            await self._fail(folder, path, found, name, found.problem, recovered=here)
        elif known:
            assert record is not None and record.invoice_id
            await self._file_known(folder, path, record.path, found.sha256, record.invoice_id,
                                   found.identity)
        elif refused:
            # Rejected before, and failed/ refused it: move it, never send it again.
            assert record is not None
            reason, _, detail = (record.last_error or "rejected: ").partition(": ")
            await self._fail(folder, path, found, name, inspect.Problem(reason, detail),
                             recovered=True)
        elif not found.complete:
            await self._incomplete(folder, path, found, name)
        else:
            assert problem is not None
            await self._fail(folder, path, found, name, problem, invoice=invoice)

    def _verdict(
        self,
        folder: Folder,
        found: inspect.Inspection,
        invoice: Invoice | None,
        unreadable: str | None,
    ) -> tuple[inspect.Problem | None, inspect.Problem | None]:
        """(a reason to fail, a reason to warn) under the folder's Factur-X policy."""
        if folder.facturx == "off" or found.kind is None:
            return None, None
        problem = facturx_verdict(found.kind, invoice, unreadable)
        if problem is None:
            return None, None
        return (problem, None) if folder.facturx == "require" else (None, problem)

    async def _number_taken(
        self, folder: Folder, path: Path, found: inspect.Inspection, invoice: Invoice | None
    ) -> inspect.Problem | None:
        """A re-exported invoice: same seller and number as one already on its way, new bytes."""
        policy = self.config.validation.duplicate_number
        if policy == "off" or invoice is None or not (invoice.number and invoice.seller_key):
            return None
        first = await self._journal.find_number(
            folder.org.key, invoice.seller_key, invoice.number, invoice.type_code,
            other_than=found.sha256,
        )
        if first is not None and first.state in (State.QUEUED, State.SENDING) and (
            first.path == path or first.path not in self.active
        ):
            # Queued, but its file was rewritten or removed before it was sent: that
            # version never reached Qonto and never will; it holds no number.
            first = None
        if first is None:
            return None
        problem = duplicate_number(invoice, first.invoice_id, first.path)
        if policy == "fail":
            return problem
        log.warning(
            "duplicate_number", sha256=found.sha256, org=folder.org.key, number=invoice.number,
            seller=invoice.seller, first_invoice_id=first.invoice_id, first_path=first.path,
            detail=problem.detail,
        )
        return None

    def _queue_or_twin(
        self, folder: Folder, path: Path, found: inspect.Inspection, record: Record | None
    ) -> bool:
        """False when the same content is already on its way from another file: it waits."""
        if (
            record is not None
            and record.state in (State.QUEUED, State.SENDING)
            and record.path != path
            and record.path in self.active
        ):
            self._twins[record.path].append(path)
            log.info("file_queued", path=path, sha256=found.sha256, org=folder.org.key,
                     twin_of=record.path)
            return False
        return True

    async def _enqueue(
        self,
        folder: Folder,
        path: Path,
        name: str,
        found: inspect.Inspection,
        invoice: Invoice | None,
        warning: inspect.Problem | None,
    ) -> None:
        org = folder.org.key
        self._unfinished.forget(path)
        await self._journal.enqueue(org, found.sha256, path, name, found.size, invoice,
                                    wait=False)
        assert found.kind is not None
        content_type = inspect.CONTENT_TYPES[found.kind]
        if warning is not None:
            log.warning(
                "facturx_warning", path=path, sha256=found.sha256, org=org,
                reason=warning.reason, detail=warning.detail,
            )
        log.info(
            "file_queued", path=path, sha256=found.sha256, org=org, size=found.size,
            type=found.kind, facturx=invoice.label if invoice else None,
            number=invoice.number if invoice else None,
        )
        self.uploaders[org].add(Pending(
            folder=folder,
            path=path,
            sha256=found.sha256,
            file_name=name,
            name_key=qonto.name_key(name),
            identity=found.identity,
            content_type=content_type,
            wire_bytes=found.size + qonto.part_overhead(name, content_type),
        ))

    async def _fail(
        self,
        folder: Folder,
        path: Path,
        found: inspect.Inspection,
        name: str,
        problem: inspect.Problem,
        *,
        recovered: bool = False,
        invoice: Invoice | None = None,
    ) -> None:
        await self._filing.failed(
            folder, path, sha256=found.sha256, file_name=name, size=found.size,
            reason=problem.reason, detail=problem.detail, expect=found.identity,
            recovered=recovered, invoice=invoice,
        )
        self.release(path, failed=True)

    async def _too_large(
        self, folder: Folder, seen: watcher.Seen, name: str, limit: int
    ) -> None:
        """Judged from its size alone: a 10 GB file is never read, nor hashed (nor copied)."""
        if self._kept.get(seen.path) == seen.identity:
            self.release(seen.path, failed=True)  # already judged, and left where it is
            return
        problem = inspect.too_large(limit)
        try:
            dest = await self._filing.failed(
                folder, seen.path, sha256=None, file_name=name, size=seen.identity.size,
                reason=problem.reason, detail=problem.detail, expect=seen.identity,
                max_copy_bytes=_MAX_COPY_FACTOR * self.config.upload.max_file_bytes,
            )
        except FileChanged:
            self.recheck(seen.path)
            return
        if dest == seen.path:
            self._kept[seen.path] = seen.identity
        self.release(seen.path, failed=True)

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
            self.release(path, left=True)
        elif waited_s >= self._unfinished.fail_s:
            problem = inspect.truncated(found.kind, waited_s)
            await self._fail(folder, path, found, name, problem)
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
        self.release(path, left=dest is None)
