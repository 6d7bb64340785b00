"""Step 6: uploading one organization's waiting files, and what each failure means.

Per organization: a list of waiting files, a dispatcher that packs them into
requests, and deliveries that retry, split or pause until each file is
imported, failed, or left queued for the next run. Batching never costs
latency: a partial batch goes out at once when an upload slot is free, and
grows toward a full request only while every slot is busy (as a database
groups commits), for at most `linger_seconds`. A slot is held for the request
alone: filing the answer's files happens outside it. Files are read again
just before sending, and only the exact bytes whose sha256 the journal holds
are sent.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from ..aio import wait_event, wait_first
from ..backoff import next_delay
from ..config import UploadConfig
from ..errors import (
    AuthProblem,
    FileChanged,
    JournalUnavailable,
    QontoError,
    Rejected,
    Transient,
    Unmatched,
    UnsafeFile,
)
from ..journal import Journal
from ..qonto import Slots, Upload
from . import batcher
from .books import Books, Why
from .examine import read_regular
from .filing import Filing
from .orgs import Org
from .records import Content, Outcome, Pending

log = structlog.get_logger()
_batch_ids = itertools.count(1)
# Batch ids name the run too, so that they stay unique across restarts in the logs.
_RUN = time.strftime("%y%m%d%H%M%S")


class OrgUploader:
    def __init__(
        self,
        *,
        org: Org,
        journal: Journal,
        books: Books,
        filing: Filing,
        settings: UploadConfig,
        limits: batcher.Limits,
        slots: Slots,
        stopping: asyncio.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.org = org.key
        self._org = org
        self._client = org.client
        self._journal = journal
        self._books = books
        self._filing = filing
        self._settings = settings
        self._limits = limits
        self._slots = slots
        self._stopping = stopping
        self._rng = rng or random.Random()
        self._waiting: list[Pending] = []
        # The files in this uploader's hands: each leaves once (a batch given up at a
        # stop may hold files already filed, or handed back to settling).
        self._owned: set[Path] = set()
        self._arrived = asyncio.Event()
        self._in_progress = 0
        self._in_flight_files = 0
        self._room = asyncio.Event()
        self._room.set()
        self._completing: set[asyncio.Future[None]] = set()
        self._tg: asyncio.TaskGroup | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def sending(self) -> int:
        """Files in requests on their way (or waiting to be sent again)."""
        return self._in_flight_files

    @property
    def oldest_queued_at(self) -> float | None:
        return min((p.queued_at for p in self._waiting), default=None)

    @property
    def paused(self) -> bool:
        return self._org.paused

    @property
    def idle(self) -> bool:
        return not self._waiting and self._in_progress == 0 and not self._completing

    async def drain(self) -> None:
        """Wait for answers already received to be recorded (after a forced stop)."""
        while self._completing:
            await asyncio.gather(*self._completing, return_exceptions=True)

    def add(self, pending: Pending) -> None:
        self._owned.add(pending.path)
        self._waiting.append(pending)
        self._arrived.set()

    async def run(self) -> None:
        """Dispatch batches until the daemon stops; deliveries end within the TaskGroup."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            while not self._stopping.is_set():
                batch = await self._next_batch()
                if batch is None:
                    break
                self._in_progress += 1
                # One batch more than the slots: read and marked while the slots are
                # busy, it starts the moment one is free (one request's bytes at most).
                if self._in_progress >= self._settings.concurrency + 1:
                    self._room.clear()
                tg.create_task(self._deliver_batch(batch))
        self._leave_waiting()

    async def _next_batch(self) -> list[Pending] | None:
        while True:
            if self._stopping.is_set():
                return None
            if not self._waiting:
                self._arrived.clear()
                await wait_first(self._arrived, self._stopping)
                continue
            if not self._room.is_set():
                await wait_first(self._room, self._stopping)
                continue
            if self._org.gate.paused and not await self._org.gate.wait_open(self._stopping):
                return None
            if self._org.gave_up:
                self._leave_waiting()
                continue
            batch, rest = batcher.pack(self._waiting, self._limits)
            if not batch:  # cannot happen: inspection fails what fits nowhere
                raise RuntimeError("waiting files that fit in no request")
            linger_s = self._settings.linger_s - (time.monotonic() - batch[0].queued_at)
            if (
                not batcher.is_full(batch, rest, self._limits)
                and not self._slots.free.is_set()
                and linger_s > 0
            ):
                self._arrived.clear()
                await wait_first(
                    self._arrived, self._slots.free, self._stopping, timeout_s=linger_s
                )
                continue
            self._waiting = rest
            return batch

    def _leave_waiting(self) -> None:
        """Files not sent stay queued in the journal and in their inbox."""
        waiting, self._waiting = self._waiting, []
        for pending in waiting:
            self._finish(pending, Outcome.LEFT)

    async def _deliver_batch(self, batch: list[Pending]) -> None:
        self._in_flight_files += len(batch)
        try:
            await self._deliver(batch)
        except JournalUnavailable:
            # Only while stopping with a full disk: what was not recorded is sent
            # again at the next start, and Qonto answers with the same invoice_ids.
            log.warning("batch_not_recorded", org=self.org, files=len(batch))
            self._leave(batch)
        finally:
            self._in_flight_files -= len(batch)
            self._in_progress -= 1
            self._room.set()

    async def _deliver(self, batch: list[Pending]) -> None:
        """Send until every file of the batch is imported, failed, or left for later."""
        attempt = 0
        batch_id = f"{self.org}-{_RUN}-{next(_batch_ids)}"
        bound = log.bind(batch_id=batch_id, org=self.org)
        while True:
            if self._org.gave_up or self._stopping.is_set():
                self._leave(batch)
                return
            if self._org.gate.paused:
                self._note(batch, Why.PAUSED)
                if not await self._org.gate.wait_open(self._stopping):
                    self._leave(batch)
                    return
            batch, uploads = await self._read_again(batch)
            if not batch:
                return
            probe = await self._org.gate.admit(self._stopping)
            if probe is None:
                self._leave(batch)
                return
            held = [probe]

            def let_go(held: list[bool] = held) -> None:
                if held[0]:
                    held[0] = False
                    self._org.gate.release_probe()

            try:
                await self._journal.mark_sending(self.org, [p.sha256 for p in batch])
                self._note(batch, Why.SENDING)
                try:
                    await self._client.authorize()  # outside the slots shared by all
                    async with self._slots.hold():
                        started = time.monotonic()
                        ids = await self._client.upload(uploads)
                except Transient as exc:
                    delay_s = next_delay(
                        attempt,
                        exc.retry_after_s,
                        self._rng,
                        initial_s=self._settings.backoff_initial_s,
                        max_s=self._settings.backoff_max_s,
                    )
                    attempt += 1
                    bound.warning(
                        "batch_retry", error=str(exc), status=exc.status, attempt=attempt,
                        delay_s=round(delay_s, 2), files=len(batch),
                        retry_after_s=exc.retry_after_s, trace_id=exc.trace_id,
                    )
                    await self._journal.note_error(
                        self.org, [p.sha256 for p in batch], str(exc), exc.trace_id
                    )
                    await self._journal.note_org(self.org, error=str(exc))
                    await self._org.unanswered(str(exc))
                    let_go()  # not an answer on the credentials: the next request may try
                    self._note(batch, Why.RETRYING)
                    if await wait_event(self._stopping, delay_s):
                        self._leave(batch)
                        return
                    continue
                except AuthProblem as exc:
                    await self._journal.note_error(
                        self.org, [p.sha256 for p in batch], str(exc), exc.trace_id
                    )
                    await self._org.refused(exc)
                    let_go()  # after the pause is set: the others wait it out
                    continue
                except (Rejected, Unmatched) as exc:
                    self._org.gate.succeeded()  # refused for its content: the key is good
                    let_go()
                    await self._org.answered()
                    if len(batch) > 1:
                        await self._split(batch, exc, bound)
                        return
                    if isinstance(exc, Rejected):
                        await self._reject(batch[0], exc)
                        return
                    raise AssertionError("a one-file answer always matches") from exc
                self._org.gate.succeeded()
                let_go()
                await self._org.answered()
                del uploads  # the bytes sent are not needed any more
                # The answer is in: it is recorded even if a stop cancels this delivery,
                # and filing it does not keep the next request waiting.
                done = asyncio.ensure_future(
                    self._complete(batch, ids, time.monotonic() - started, batch_id)
                )
                self._completing.add(done)
                done.add_done_callback(self._completing.discard)
                assert self._tg is not None
                self._tg.create_task(self._recorded(done, batch))
                return
            finally:
                let_go()

    async def _recorded(self, done: asyncio.Future[None], batch: list[Pending]) -> None:
        """Wait for an answer's files to be filed; its failures end up here."""
        try:
            await asyncio.shield(done)
        except JournalUnavailable:
            # Only while stopping with a full disk: what was not recorded is sent
            # again at the next start, and Qonto answers with the same invoice_ids.
            log.warning("batch_not_recorded", org=self.org, files=len(batch))
            self._leave(batch)

    async def _split(self, batch: list[Pending], exc: QontoError, bound: Any) -> None:
        """All-or-nothing: one bad file sank the request, so find it by halves."""
        half = len(batch) // 2
        bound.warning(
            "batch_split", status=exc.status, error=str(exc), trace_id=exc.trace_id,
            files=len(batch),
            halves=[half, len(batch) - half],
        )
        await self._deliver(batch[:half])
        await self._deliver(batch[half:])

    async def _reject(self, pending: Pending, exc: Rejected) -> None:
        try:
            dest = await self._filing.failed(
                pending.folder,
                pending.path,
                sha256=pending.sha256,
                file_name=pending.file_name,
                size=pending.size,
                reason="rejected_by_qonto",
                detail=exc.detail,
                expect=pending.identity,
                http_status=exc.status,
                qonto_code=exc.code,
                trace_id=exc.trace_id,
            )
        except FileChanged:
            self._finish(pending, Outcome.CHANGED)
            return
        if dest is None:
            self._books.waits(pending.path, Why.NOT_MOVED)
        self._finish(pending, Outcome.FAILED if dest is not None else Outcome.LEFT)

    def _finish(self, pending: Pending, outcome: Outcome) -> None:
        if pending.path in self._owned:
            self._owned.discard(pending.path)
            self._books.finish(pending.path, outcome)

    def _note(self, batch: Sequence[Pending], why: Why) -> None:
        for pending in batch:
            self._books.waits(pending.path, why)

    def _leave(self, batch: Sequence[Pending]) -> None:
        for pending in batch:
            self._finish(pending, Outcome.LEFT)

    async def _read_again(self, batch: list[Pending]) -> tuple[list[Pending], list[Upload]]:
        """Re-read each file; drop any that changed since it was inspected."""
        contents = await asyncio.to_thread(_read_all, batch, self._settings.max_file_bytes)
        kept: list[Pending] = []
        uploads: list[Upload] = []
        for pending, content in zip(batch, contents, strict=True):
            if isinstance(content, Content) and content.sha256 == pending.sha256:
                # Rewritten with the same bytes is still the same invoice; what is
                # filed afterwards must be the file as read now.
                kept.append(replace(pending, identity=content.identity))
                uploads.append(Upload(pending.file_name, content.data, pending.content_type))
                continue
            log.info(
                "file_changed", path=pending.path, sha256=pending.sha256, org=self.org,
                detail=content if isinstance(content, str) else "its content changed since it "
                "settled; it will settle and be inspected again",
            )
            self._finish(pending, Outcome.CHANGED)
        return kept, uploads

    async def _complete(
        self,
        batch: list[Pending],
        ids: dict[str, str],
        elapsed_s: float,
        batch_id: str,
    ) -> None:
        by_sha = {p.sha256: ids[p.file_name] for p in batch}
        einvoice = {p.sha256: p.path for p in batch if p.folder.send_by_einvoice}
        await self._journal.record_imported(self.org, by_sha, einvoice=einvoice)
        if einvoice:
            self._org.einvoices_recorded.set()
        await self._journal.note_org(self.org, paused=False, success=True)
        log.info(
            "batch_uploaded", batch_id=batch_id, org=self.org, files=len(batch),
            bytes=batcher.request_bytes(batch, self._limits), duration_s=round(elapsed_s, 3),
        )
        for pending in batch:
            try:
                dest = await self._filing.done(
                    pending.folder, pending.path, pending.sha256, by_sha[pending.sha256],
                    expect=pending.identity, batch_id=batch_id,
                )
            except FileChanged:
                # What was sent is imported; what is there now is another file.
                self._finish(pending, Outcome.CHANGED)
                continue
            # Not moved (a refused move): the next scan moves it, without an upload.
            if dest is None:
                self._books.waits(pending.path, Why.NOT_MOVED)
            self._finish(pending, Outcome.IMPORTED if dest else Outcome.LEFT)


def _read_all(batch: Sequence[Pending], limit: int) -> list[Content | str]:
    out: list[Content | str] = []
    for pending in batch:
        try:
            content = read_regular(pending.path, limit)
        except FileNotFoundError:
            out.append("the file disappeared before it was sent; it stays queued if it returns")
            continue
        except FileChanged:
            out.append("it is being written to; it will settle and be inspected again")
            continue
        except (OSError, UnsafeFile) as exc:
            out.append(f"cannot read it again before sending: {exc}")
            continue
        out.append(content)
    return out

