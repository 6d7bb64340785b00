"""What the uploads do with each answer: the organization's uploader alone, Qonto scripted.

Real files, a real journal and real moves; only the client at the edge is a
fake that answers what each test says, in a known order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import events, wait_for

from daemon import qonto
from daemon.config import Folder, Organization, UploadConfig
from daemon.errors import AuthProblem, Rejected, Transient, Unmatched
from daemon.flow.batcher import Limits
from daemon.flow.books import Books
from daemon.flow.examine import read_regular
from daemon.flow.filing import Filing
from daemon.flow.orgs import Org
from daemon.flow.records import Pending
from daemon.flow.settle import Settler, Unfinished
from daemon.flow.upload import OrgUploader
from daemon.identity import Seen
from daemon.journal import Journal
from daemon.qonto import Slots, Upload
from daemon.testing.samples import facturx_pdf

ORG = Organization(base_url="http://127.0.0.1:9", login="acme-1")
SETTINGS = UploadConfig(
    concurrency=1, linger_s=0.0, backoff_initial_s=0.01, backoff_max_s=0.05,
    auth_pause_initial_s=0.2, auth_pause_max_s=0.4,
)
Answer = Callable[[list[str]], Awaitable[dict[str, str]]]


class Scripted:
    """Qonto, as each test scripts it: `answer` gets the names of each request."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[list[str]] = []

    async def authorize(self) -> None:
        return None

    async def upload(self, files: Sequence[Upload]) -> dict[str, str]:
        names = [f.file_name for f in files]
        self.requests.append(names)
        return await self.answer(names)

    async def send_by_einvoice(self, invoice_id: str) -> None:
        raise AssertionError("no e-invoice here")

    async def client_invoice(self, invoice_id: str) -> dict[str, Any]:
        raise AssertionError("no e-invoice here")


def ids(names: list[str]) -> dict[str, str]:
    return {n: f"id-{n}" for n in names}


async def imported(names: list[str]) -> dict[str, str]:
    return ids(names)


@dataclass
class Bench:
    folder: Folder
    journal: Journal
    books: Books
    settler: Settler
    stopping: asyncio.Event

    async def run(self, client: Scripted, names: list[str], *, once: bool = False,
                  settings: UploadConfig = SETTINGS) -> OrgUploader:
        """Hand `names` (made in the inbox) to an uploader and start it."""
        org = Org(ORG.key, client, self.journal, settings, give_up_on_auth=once)
        uploader = OrgUploader(
            org=org, journal=self.journal, books=self.books, filing=Filing(self.journal),
            settings=settings, limits=Limits(settings.max_request_bytes, qonto.body_size([])),
            slots=Slots(settings.concurrency), stopping=self.stopping,
        )
        for name in names:
            uploader.add(await self.pending(name))
        self.task = asyncio.create_task(uploader.run())
        return uploader

    async def pending(self, name: str) -> Pending:
        path = facturx_pdf(self.folder.inbox / name, name.upper())
        content = read_regular(path, SETTINGS.max_file_bytes)
        self.books.consider(Seen(path, content.identity), 0.0)
        await self.journal.enqueue(ORG.key, content.sha256, path, name, content.size)
        return Pending(
            folder=self.folder, path=path, sha256=content.sha256, file_name=name,
            name_key=qonto.name_key(name), identity=content.identity,
            content_type="application/pdf",
            wire_bytes=content.size + qonto.part_overhead(name, "application/pdf"),
        )

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder = Folder(inbox=inbox, done=inbox / "done", failed=tmp_path / "failed", org=ORG)
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    settler = Settler(1.0, 600.0)
    books = Books(settler, Unfinished(600.0, 1.0))
    bench = Bench(folder, journal, books, settler, asyncio.Event())
    yield bench
    if hasattr(bench, "task"):
        await bench.stop()
    await journal.close()


def done(bench: Bench) -> set[str]:
    where = bench.folder.done
    return {p.name for p in where.iterdir()} if where.exists() else set()


async def test_a_transient_answer_is_retried_honouring_retry_after(bench, _logs):
    answers = iter([
        Transient("HTTP 429", status=429, retry_after_s=0.2),
        Transient("connection failed: Server disconnected"),
    ])

    async def answer(names: list[str]) -> dict[str, str]:
        failure = next(answers, None)
        if failure is not None:
            raise failure
        return ids(names)

    client = Scripted(answer)
    await bench.run(client, ["a.pdf"])
    await wait_for(lambda: bench.books.counts.imported == 1, what="a.pdf imported")
    retries = events(_logs, "batch_retry")
    assert [r["status"] for r in retries] == [429, None]
    assert retries[0]["delay_s"] >= 0.2 and retries[0]["retry_after_s"] == 0.2
    assert done(bench) == {"a.pdf"} and len(client.requests) == 3
    (row,) = await bench.journal.in_state("done")
    assert row.invoice_id == "id-a.pdf" and row.attempts == 3


async def test_a_rejected_batch_is_split_until_the_bad_file_is_alone(bench, _logs):
    async def answer(names: list[str]) -> dict[str, str]:
        if "b.pdf" in names:
            raise Rejected("HTTP 422 invalid", status=422, code="invalid",
                           detail="b.pdf: VAT number is invalid")
        return ids(names)

    client = Scripted(answer)
    await bench.run(client, ["a.pdf", "b.pdf", "c.pdf"])
    await wait_for(lambda: bench.books.idle, what="every file settled")
    assert client.requests[0] == ["a.pdf", "b.pdf", "c.pdf"]
    assert ["b.pdf"] in client.requests
    assert done(bench) == {"a.pdf", "c.pdf"}
    assert bench.books.counts.imported == 2 and bench.books.counts.failed == 1
    report = json.loads((bench.folder.failed / "b.pdf.error.json").read_text())
    assert report["detail"] == "b.pdf: VAT number is invalid" and report["http_status"] == 422
    assert events(_logs, "batch_split")


async def test_an_answer_that_matches_no_file_is_sent_again_smaller(bench, _logs):
    async def answer(names: list[str]) -> dict[str, str]:
        if len(names) > 1:
            raise Unmatched("HTTP 200 names 'zzz.pdf'", status=200)
        return {names[0]: f"single-{names[0]}"}

    await bench.run(Scripted(answer), ["a.pdf", "b.pdf"])
    await wait_for(lambda: bench.books.counts.imported == 2, what="both imported")
    assert {e["invoice_id"] for e in events(_logs, "file_imported")} == {
        "single-a.pdf", "single-b.pdf"}


async def test_a_refused_key_pauses_with_a_growing_pause_then_goes_on(bench, _logs):
    refusals = iter([1, 2])

    async def answer(names: list[str]) -> dict[str, str]:
        if next(refusals, None) is not None:
            raise AuthProblem("HTTP 401 unauthorized", status=401, hint="check the key")
        return ids(names)

    await bench.run(Scripted(answer), ["a.pdf"])
    await wait_for(lambda: bench.books.counts.imported == 1, what="a.pdf imported")
    assert [e["pause_s"] for e in events(_logs, "org_paused")] == [0.2, 0.4]
    assert not bench.folder.failed.exists()


async def test_with_run_once_a_refused_key_leaves_the_file_where_it_is(bench, _logs):
    async def answer(names: list[str]) -> dict[str, str]:
        raise AuthProblem("HTTP 401 token_expired", status=401, hint="check the key")

    uploader = await bench.run(Scripted(answer), ["a.pdf"], once=True)
    await wait_for(lambda: bench.books.idle, what="the file left")
    (paused,) = events(_logs, "org_paused")
    assert paused["pause_s"] is None and uploader.paused
    assert bench.books.counts.left == 1
    assert (bench.folder.inbox / "a.pdf").exists() and not done(bench)
    (row,) = await bench.journal.in_state("queued")  # sent again at the next run
    assert "token_expired" in (row.last_error or "")


async def test_a_file_rewritten_before_it_is_sent_goes_back_to_settling(bench, _logs):
    client = Scripted(imported)
    uploader = await bench.run(client, [])
    pending = await bench.pending("b.pdf")
    pending.path.write_bytes(b"%PDF-1.7 another version\n%%EOF\n")  # after it was judged
    uploader.add(pending)
    await wait_for(lambda: events(_logs, "file_changed"), what="the change noticed")
    assert client.requests == []  # only the bytes whose sha256 was judged are ever sent
    assert pending.path in bench.books and pending.path in bench.settler
    assert bench.books.counts == type(bench.books.counts)()


async def test_what_an_answer_imported_is_filed_even_if_the_daemon_stops(bench):
    held = asyncio.Event()
    client_answered = asyncio.Event()

    async def answer(names: list[str]) -> dict[str, str]:
        await held.wait()
        client_answered.set()
        return ids(names)

    await bench.run(Scripted(answer), ["a.pdf"])
    held.set()
    await asyncio.wait_for(client_answered.wait(), 10)
    await bench.stop()
    await wait_for(lambda: bench.books.counts.imported == 1, what="a.pdf filed")
    assert done(bench) == {"a.pdf"}
