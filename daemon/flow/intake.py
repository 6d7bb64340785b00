"""From a settled file to its fate: read -> examine -> parse -> decide -> act.

Several intake workers take settled files from a queue that is fair across
folders: reading and hashing in threads, Factur-X parsing in the parser
workers. Decisions that depend on the journal (the same content twice, the
same invoice number twice) are taken one at a time. Every file ends in one
`Outcome` handed to the books, or goes on to its organization's uploads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from .. import qonto
from ..config import Config, Folder
from ..errors import FileChanged, JournalUnavailable, UnsafeFile
from ..invoice_xml import Invoice
from ..journal import Journal
from ..parsers import ParserUnavailable
from ..timing import DEFAULT, MONOTONIC, Clock, Intervals
from . import examine
from .batcher import Limits
from .books import Books, Why
from .decide import Decision, Verdict, decide
from .filing import Filing
from .orgs import Org
from .reading import Read, Reader
from .records import Content, Inspection, Outcome, Pending, Problem, Seen
from .rules import fatal_ids, report_of
from .settle import Settled, Unfinished
from .upload import OrgUploader

log = structlog.get_logger()

# A file too large for Qonto is still moved into failed/ when that is a copy,
# up to this many times the file limit; beyond, it stays in the inbox.
_MAX_COPY_FACTOR = 10


@dataclass(frozen=True)
class Later:
    """Look at the file again at `until`: it is not the file's fault, or not yet its time."""

    seen: Seen
    until: float
    why: Why


@dataclass(frozen=True)
class Queued:
    """Handed on: to its organization's uploads, or to wait for its twin."""


Step = Outcome | Later | Queued


class Intake:
    def __init__(
        self,
        config: Config,
        *,
        journal: Journal,
        books: Books,
        settled: Settled,
        unfinished: Unfinished,
        filing: Filing,
        uploads: Mapping[str, OrgUploader],
        orgs: Mapping[str, Org],
        limits: Limits,
        reader: Reader,
        stopping: asyncio.Event,
        once: bool,
        intervals: Intervals = DEFAULT,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.config = config
        self._once = once
        self._journal = journal
        self._books = books
        self._settled = settled
        self._unfinished = unfinished
        self._filing = filing
        self._uploads = uploads
        self._orgs = orgs
        self._limits = limits
        self._reader = reader
        self._stopping = stopping
        self._intervals = intervals
        self._clock = clock
        self._folders = {f.inbox: f for f in config.folders}
        self._deciding = asyncio.Lock()  # journal-dependent decisions, one at a time
        self._held: dict[Path, str] = {}  # files held for the rules, and why: said once
        self.examining = 0

    @property
    def idle(self) -> bool:
        return not len(self._settled) and self.examining == 0

    async def run(self, *, may_parse: bool = True) -> None:
        """One of several intake workers: take settled files until the daemon stops
        (only files that need no parser unless `may_parse`)."""
        while (seen := await self._settled.get(self._stopping, may_parse=may_parse)) is not None:
            self.examining += 1
            try:
                step = await self.take(seen)
            except JournalUnavailable:
                self._books.finish(seen.path, Outcome.LEFT)  # stopping with a full disk
                return
            finally:
                self.examining -= 1
            match step:
                case Outcome():
                    self._books.finish(seen.path, step)
                case Later(seen=again, until=until, why=why):
                    self._books.later(again, until, why)
                case Queued():
                    pass

    async def take(self, seen: Seen) -> Step:
        """Examine one settled file, then file it or queue it. One file's trouble stays its own."""
        path = seen.path
        folder = self._folders[path.parent]
        name = qonto.upload_name(path.name)
        if self._unfinished.unchanged(seen, self._clock()):
            # Still incomplete, still the same: nothing to read.
            return Later(seen, self._unfinished.next_look(path, self._clock()), Why.INCOMPLETE)
        limit = min(self.config.upload.max_file_bytes, self._fits_request(name))
        if seen.identity.size > limit:
            return await self._too_large(folder, seen, name, limit)
        content = await self._read(seen)
        if isinstance(content, Outcome):
            return content
        found = await asyncio.to_thread(examine.examine, content, path.name, limit, limit)
        try:
            read = await self._reader.read(folder, path, found, content)
        except ParserUnavailable as exc:
            # Not the file's fault: it waits, and is looked at again in a while.
            log.error("parser_unavailable", path=path, error=str(exc),
                      hint="check memory and processes on this machine; the file waits")
            return Later(seen, self._clock() + self._intervals.parser_retry_s, Why.NO_PARSER)
        if read is None:
            return Outcome.LEFT  # the daemon stops: the file is read at the next start
        try:
            return await self._decide_and_act(folder, path, name, found, read)
        except FileChanged:
            return Outcome.CHANGED

    async def _read(self, seen: Seen) -> Content | Outcome:
        path = seen.path
        try:
            content = await asyncio.to_thread(
                examine.read_regular, path, self.config.upload.max_file_bytes
            )
        except FileNotFoundError:
            return Outcome.GONE
        except FileChanged:
            return Outcome.CHANGED
        except UnsafeFile as exc:
            self._books.warn_once(path, "file_skipped", str(exc))
            return Outcome.GONE
        except OSError as exc:
            self._books.warn_once(
                path, "file_unreadable", exc.strerror or str(exc),
                hint="check the file's permissions; it is tried again at the next scan",
            )
            self._books.waits(path, Why.UNREADABLE)
            return Outcome.LEFT
        if content.identity != seen.identity:
            return Outcome.CHANGED  # written to again: settle afresh
        self._books.read_fine(path)
        return content

    async def _decide_and_act(
        self,
        folder: Folder,
        path: Path,
        name: str,
        found: Inspection,
        read: Read,
    ) -> Step:
        """Decide under the lock (queueing, twins); file away outside it (moves can be slow)."""
        invoice = read.invoice
        async with self._deciding:
            decision = await decide(
                self._journal, folder, path, found, invoice, read.unreadable,
                numbers=self.config.validation.duplicate_number, in_hand=self._books,
                rules=read.rules,
            )
            if decision.verdict is not Verdict.HOLD:
                self._held.pop(path, None)
            match decision.verdict:
                case Verdict.SEND:
                    await self._enqueue(folder, path, name, found, invoice, decision)
                    return Queued()
                case Verdict.TWIN:
                    assert decision.record is not None
                    self._books.twin(decision.record.path, path)
                    self._books.waits(path, Why.TWIN)
                    log.info("file_queued", path=path, sha256=found.sha256, org=folder.org.key,
                             twin_of=decision.record.path)
                    return Queued()
                case Verdict.KNOWN | Verdict.FAIL | Verdict.INCOMPLETE | Verdict.HOLD:
                    pass
        if decision.verdict is Verdict.KNOWN and decision.rules_warning is not None:
            self._say_rules(path, found, folder.org.key, decision.rules_warning, invoice)
        return await self._act(folder, path, name, found, decision)

    async def _act(
        self, folder: Folder, path: Path, name: str, found: Inspection, decision: Decision
    ) -> Step:
        match decision.verdict:
            case Verdict.KNOWN:
                assert decision.record is not None and decision.record.invoice_id
                return await self._file_known(
                    folder, path, decision.record.path, found, decision.record.invoice_id,
                    einvoice=decision.einvoice,
                )
            case Verdict.FAIL:
                assert decision.problem is not None
                extra: dict[str, Any] = {}
                if decision.problem.reason == "rules_failed":
                    # Each finding (rule id, text, location) in the sidecar too.
                    extra["findings"] = report_of(decision.invoice).get("findings", [])
                return await self._fail(
                    folder, path, found, name, decision.problem,
                    recovered=decision.recovered, invoice=decision.invoice, **extra,
                )
            case Verdict.INCOMPLETE:
                return await self._incomplete(folder, path, found, name)
            case Verdict.HOLD:
                assert decision.problem is not None
                return self._hold(folder, path, found, decision.problem)
            case Verdict.SEND | Verdict.TWIN:
                raise AssertionError("taken under the lock")

    async def _enqueue(
        self,
        folder: Folder,
        path: Path,
        name: str,
        found: Inspection,
        invoice: Invoice | None,
        decision: Decision,
    ) -> None:
        org = folder.org.key
        warning = decision.warning
        self._unfinished.forget(path)
        await self._journal.enqueue(org, found.sha256, path, name, found.size, invoice,
                                    wait=False)
        assert found.kind is not None
        if warning is not None:
            log.warning(
                "facturx_warning", path=path, sha256=found.sha256, org=org,
                reason=warning.reason, detail=warning.detail,
            )
        if (rules := decision.rules_warning) is not None:
            self._say_rules(path, found, org, rules, invoice)
        log.info(
            "file_queued", path=path, sha256=found.sha256, org=org, size=found.size,
            type=found.kind, facturx=invoice.label if invoice else None,
            number=invoice.number if invoice else None,
        )
        content_type = found.kind.content_type
        self._books.waits(path, Why.QUEUED)
        self._uploads[org].add(Pending(
            folder=folder,
            path=path,
            sha256=found.sha256,
            file_name=name,
            name_key=qonto.name_key(name),
            identity=found.identity,
            content_type=content_type,
            wire_bytes=found.size + qonto.part_overhead(name, content_type),
        ))

    def _say_rules(
        self, path: Path, found: Inspection, org: str, rules: Problem, invoice: Invoice | None
    ) -> None:
        said = {"path": path, "sha256": found.sha256, "org": org,
                "rules": fatal_ids(invoice), "detail": rules.detail}
        if rules.reason == "rules_unknown":  # not judged: imported all the same
            log.warning("rules_unknown", **said)
        else:  # imported although it breaks rules
            log.warning("rules_warning", **said)

    def _hold(self, folder: Folder, path: Path, found: Inspection, problem: Problem) -> Step:
        """The rules could not judge it and the folder requires them: it waits in its
        inbox, and is judged again later (a fresh checker, or another configuration)."""
        if self._held.get(path) != problem.detail:
            self._held[path] = problem.detail
            log.error(
                "rules_unknown", path=path, detail=problem.detail, sha256=found.sha256,
                org=folder.org.key,
                hint=("the file stays in its inbox for the next run" if self._once else
                      "the file stays in its inbox and is checked again every "
                      f"{self._intervals.rules_retry_s:g} s")
                + '; to import it without the rules\' verdict, set rules = "warn" for its '
                "folder",
            )
        if self._once:
            return Outcome.LEFT
        return Later(
            Seen(path, found.identity), self._clock() + self._intervals.rules_retry_s,
            Why.RULES_UNKNOWN,
        )

    async def _fail(
        self,
        folder: Folder,
        path: Path,
        found: Inspection,
        name: str,
        problem: Problem,
        *,
        recovered: bool = False,
        invoice: Invoice | None = None,
        **extra: Any,
    ) -> Outcome:
        dest = await self._filing.failed(
            folder, path, sha256=found.sha256, file_name=name, size=found.size,
            reason=problem.reason, detail=problem.detail, expect=found.identity,
            recovered=recovered, invoice=invoice, **extra,
        )
        # Not moved: the rejection is recorded; the next scan moves it, never sends it.
        return self._filed(path, dest, Outcome.FAILED)

    async def _too_large(self, folder: Folder, seen: Seen, name: str, limit: int) -> Outcome:
        """Judged from its size alone: a 10 GB file is never read, nor hashed (nor copied)."""
        if self._books.kept(seen):
            return Outcome.KEPT  # already judged, and left where it is
        problem = examine.too_large(limit)
        try:
            dest = await self._filing.failed(
                folder, seen.path, sha256=None, file_name=name, size=seen.identity.size,
                reason=problem.reason, detail=problem.detail, expect=seen.identity,
                max_copy_bytes=_MAX_COPY_FACTOR * self.config.upload.max_file_bytes,
            )
        except FileChanged:
            return Outcome.CHANGED
        if dest == seen.path:
            self._books.keep(seen.path, seen.identity)
        return self._filed(seen.path, dest, Outcome.FAILED)

    async def _incomplete(
        self, folder: Folder, path: Path, found: Inspection, name: str
    ) -> Step:
        """A file that held still but is not whole: wait for its writer, then give up."""
        assert found.kind is not None
        now = self._clock()
        # Unchanged since its ctime: a restart does not give a half-written file more time.
        unchanged_s = time.time() - found.identity.ctime_ns / 1e9
        first, waited_s = self._unfinished.note(path, found.identity, now, unchanged_s=unchanged_s)
        if first:
            log.info(
                "file_incomplete", path=path, sha256=found.sha256, org=folder.org.key,
                type=found.kind, size=found.size,
                hint="the file does not end like a complete "
                f"{found.kind.upper()}: it waits for its writer to finish (at most "
                f"{self._unfinished.fail_s:g} s unchanged, then it goes to failed/ as truncated)",
            )
        if self._once:
            return Outcome.LEFT
        if waited_s >= self._unfinished.fail_s:
            problem = examine.truncated(found.kind, waited_s)
            return await self._fail(folder, path, found, name, problem)
        return Later(
            Seen(path, found.identity), self._unfinished.next_look(path, now), Why.INCOMPLETE
        )

    def _fits_request(self, name: str) -> int:
        """The largest file that fits in one request under this name."""
        framing = self._limits.closing_bytes + qonto.part_overhead(name, "application/pdf")
        return self.config.upload.max_request_bytes - framing

    async def _file_known(
        self,
        folder: Folder,
        path: Path,
        known_path: Path,
        found: Inspection,
        invoice_id: str,
        *,
        einvoice: bool,
    ) -> Outcome:
        """Content that already has an invoice_id goes to done/ without another upload;
        from a send_by_einvoice folder, its invoice is sent by e-invoice (once)."""
        asked: str | None = None
        if einvoice:
            org = folder.org.key
            # Asked for once per invoice: a file seen again (its move refused, a second
            # drop) never sends a held or rejected e-invoice again by itself.
            before = await self._journal.request_einvoice(
                org, invoice_id, found.sha256, path, again=False
            )
            asked = before or "requested"  # or what it already was: sent once per invoice
            if before is None:
                self._orgs[org].einvoices_recorded.set()
        if known_path == path:  # imported, but not moved yet (crash, permissions)
            dest = await self._filing.done(
                folder, path, found.sha256, invoice_id, expect=found.identity, recovered=True,
                einvoice=asked,
            )
        else:
            dest = await self._filing.done(
                folder, path, found.sha256, invoice_id, expect=found.identity,
                event="file_duplicate", duplicate_of=str(known_path), einvoice=asked,
            )
        return self._filed(path, dest, Outcome.DUPLICATE)

    def _filed(self, path: Path, dest: Path | None, outcome: Outcome) -> Outcome:
        """`outcome` when the file was moved; else it waits in its inbox for the next scan."""
        if dest is not None:
            return outcome
        self._books.waits(path, Why.NOT_MOVED)
        return Outcome.LEFT

