"""The daemon end to end, in this process: real folders, real SQLite, the emulator on loopback."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from helpers import (
    ENV,
    LOGIN,
    OTHER_LOGIN,
    Workspace,
    events,
    journal_row,
    names,
    sha256_of,
    wait_for,
)

from daemon import config as config_mod
from daemon.journal import Journal
from daemon.testing.emulator import Emulator
from daemon.testing.samples import facturx_pdf


async def test_startup_pickup_imports_and_records(ws, qonto, start, _logs):
    emulator, url = qonto
    a = ws.invoice("F-001.pdf")
    b = ws.invoice("F-002.pdf")
    shas = {sha256_of(a), sha256_of(b)}
    running = await start(ws.config(url), once=True)
    assert await asyncio.wait_for(running.task, 30) == 0
    assert names(ws.done) == {"F-001.pdf", "F-002.pdf"}
    assert not names(ws.inbox)
    ids = emulator.invoices_of(LOGIN)
    assert set(ids) == shas
    for sha in shas:
        row = await journal_row(ws, sha)
        assert row.state == "done" and row.invoice_id == ids[sha]
    # The bytes that reached Qonto are the file's, unchanged (the Factur-X XML survives).
    assert sha256_of(ws.done / "F-001.pdf") in ids


async def test_live_pickup_while_running(ws, qonto, start):
    emulator, url = qonto
    running = await start(ws.config(url))
    await asyncio.sleep(0)  # the watcher may not be up yet: the startup scan covers that
    path = ws.invoice("live.pdf")
    sha = sha256_of(path)
    await wait_for(lambda: "live.pdf" in names(ws.done), what="live.pdf in done/")
    assert sha in emulator.invoices_of(LOGIN)
    assert await running.stop() == 0


async def test_file_written_in_chunks_is_sent_once_whole(ws, qonto, start, _logs):
    emulator, url = qonto
    running = await start(ws.config(url, watch={"settle_seconds": 1.0}))
    source = facturx_pdf(ws.root / "src.pdf", "CHUNKED")
    data = source.read_bytes()
    target = ws.inbox / "chunked.pdf"
    with target.open("wb") as fh:
        step = len(data) // 4 + 1
        for i in range(0, len(data), step):
            fh.write(data[i : i + step])
            fh.flush()
            os.fsync(fh.fileno())
            await asyncio.sleep(0.3)  # the writer's pace; settle_seconds is longer
    await wait_for(lambda: "chunked.pdf" in names(ws.done), what="chunked.pdf in done/")
    assert list(emulator.invoices_of(LOGIN)) == [sha256_of(source)]
    assert emulator.requests == 1
    assert await running.stop() == 0


async def test_temporary_names_wait_until_renamed(ws, qonto, start):
    emulator, url = qonto
    running = await start(ws.config(url))
    for junk in (".hidden.pdf", "~$lock.pdf", "a.pdf.tmp", "b.pdf.part", "c.pdf.crdownload",
                 "Thumbs.db", "desktop.ini", ".DS_Store", "._x.pdf", "d.pdf.filepart"):
        facturx_pdf(ws.inbox / junk, junk)
    ws.invoice("marker.pdf")
    await wait_for(lambda: "marker.pdf" in names(ws.done), what="marker.pdf in done/")
    assert len(emulator.invoices_of(LOGIN)) == 1
    assert not names(ws.failed)
    (ws.inbox / "a.pdf.tmp").rename(ws.inbox / "a.pdf")
    await wait_for(lambda: "a.pdf" in names(ws.done), what="renamed a.pdf in done/")
    assert len(emulator.invoices_of(LOGIN)) == 2
    assert await running.stop() == 0


async def test_local_rejections_go_to_failed_with_sidecar(ws, qonto, start):
    emulator, url = qonto
    (ws.inbox / "empty.pdf").write_bytes(b"")
    (ws.inbox / "text.pdf").write_text("not an invoice")
    (ws.inbox / "sheet.xlsx").write_bytes(b"PK\x03\x04 spreadsheet")
    png_named_pdf = ws.inbox / "scan.pdf"
    png_named_pdf.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (ws.inbox / "huge.pdf").write_bytes(b"%PDF-1.7\n" + b"0" * 6000)
    ws.invoice("good.pdf")
    cfg = ws.config(url, upload={"max_file_bytes": 5000})
    running = await start(cfg, once=True)
    assert await asyncio.wait_for(running.task, 30) == 1
    expected = {
        "empty.pdf": "empty",
        "text.pdf": "unsupported_type",
        "sheet.xlsx": "unsupported_type",
        "scan.pdf": "extension_mismatch",
        "huge.pdf": "too_large",
    }
    for name, reason in expected.items():
        sidecar = json.loads((ws.failed / f"{name}.error.json").read_text())
        assert sidecar["reason"] == reason, name
        assert sidecar["detail"] and sidecar["time"]
        # A file too large is judged by its size alone: never read, never hashed.
        expected_sha = None if reason == "too_large" else sha256_of(ws.failed / name)
        assert sidecar["sha256"] == expected_sha
    assert names(ws.done) == {"good.pdf"}
    # Nothing that could never be accepted was sent; only the good file reached Qonto.
    assert emulator.requests == 1 and len(emulator.invoices_of(LOGIN)) == 1


async def test_duplicate_content_is_not_sent_again(ws, qonto, start, _logs):
    emulator, url = qonto
    first = ws.invoice("F-100.pdf", "F-100")
    cfg = ws.config(url)
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    invoice_id = emulator.invoices_of(LOGIN)[sha256_of(ws.done / "F-100.pdf")]
    requests = emulator.requests
    copy = ws.inbox / "copy of F-100.pdf"
    copy.write_bytes((ws.done / "F-100.pdf").read_bytes())
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    assert emulator.requests == requests  # no upload
    assert "copy of F-100.pdf" in names(ws.done)
    dup = events(_logs, "file_duplicate")
    assert dup and dup[-1]["invoice_id"] == invoice_id
    del first


async def test_same_content_twice_in_the_inbox(ws, qonto, start):
    emulator, url = qonto
    a = ws.invoice("a.pdf", "SAME")
    (ws.inbox / "b.pdf").write_bytes(a.read_bytes())
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    assert names(ws.done) == {"a.pdf", "b.pdf"}
    assert len(emulator.invoices_of(LOGIN)) == 1


async def test_name_reused_for_new_content(ws, qonto, start):
    emulator, url = qonto
    cfg = ws.config(url)
    ws.invoice("invoice.pdf", "OLD")
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    ws.invoice("invoice.pdf", "NEW", 777)
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    assert names(ws.done) == {"invoice.pdf", "invoice-1.pdf"}
    ids = emulator.invoices_of(LOGIN)
    assert len(ids) == 2
    assert sha256_of(ws.done / "invoice.pdf") != sha256_of(ws.done / "invoice-1.pdf")
    assert set(ids) == {sha256_of(ws.done / "invoice.pdf"), sha256_of(ws.done / "invoice-1.pdf")}


async def test_done_folder_outside_the_inbox(ws, qonto, start):
    emulator, url = qonto
    outside = ws.root / "archive" / "done"
    cfg = ws.config_dict(url)
    cfg["folders"][0]["done"] = str(outside)
    ws.invoice("x.pdf")
    running = await start(config_mod.from_dict(cfg, env=ENV, base_dir=ws.root), once=True)
    assert await asyncio.wait_for(running.task, 30) == 0
    assert names(outside) == {"x.pdf"}


async def test_done_and_failed_inside_the_inbox_are_not_input(ws, qonto, start):
    emulator, url = qonto
    ws.done.mkdir(parents=True)
    # Files already filed away, as a previous run would have left them.
    facturx_pdf(ws.done / "old.pdf", "OLD")
    inner_failed = ws.inbox / "failed"
    inner_failed.mkdir()
    (inner_failed / "bad.pdf").write_text("x")
    cfg = ws.config_dict(url)
    cfg["folders"][0]["failed"] = str(inner_failed)
    running = await start(config_mod.from_dict(cfg, env=ENV, base_dir=ws.root))
    ws.invoice("new.pdf")
    await wait_for(lambda: "new.pdf" in names(ws.done), what="new.pdf in done/")
    facturx_pdf(ws.done / "later.pdf", "LATER")  # written into done/ while running
    running.service.rescan()
    await asyncio.sleep(0.5)
    assert len(emulator.invoices_of(LOGIN)) == 1
    assert names(inner_failed) == {"bad.pdf"}
    assert await running.stop() == 0


async def test_batches_respect_every_limit(ws, qonto, start):
    emulator, url = qonto
    for i in range(12):
        ws.invoice(f"n{i:02}.pdf", f"N{i}", 100 + i)
    limit = 12_000  # about three of these invoices per request
    cfg = ws.config(url, upload={"max_request_bytes": limit, "linger_seconds": 0.5})
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 60) == 0
    assert len(emulator.invoices_of(LOGIN)) == 12
    seen = emulator.bodies  # (files, body bytes) per request
    assert sum(n for n, _ in seen) == 12
    assert all(1 <= n <= 5 for n, _ in seen)
    assert all(size <= limit for _, size in seen), seen
    assert len(seen) >= 4


async def test_at_most_five_files_per_request(ws, qonto, start):
    emulator, url = qonto
    for i in range(11):
        ws.invoice(f"f{i}.pdf", f"F{i}")
    cfg = ws.config(url, upload={"linger_seconds": 0.5, "concurrency": 1})
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 60) == 0
    assert len(emulator.invoices_of(LOGIN)) == 11
    sizes = [len(names) for _, status, names in emulator.log if status == 200]
    assert len(sizes) == emulator.requests  # none refused: the emulator refuses more than 5
    assert sum(sizes) == 11 and max(sizes) <= 5


def with_other_organization(ws: Workspace, url: str, name: str) -> tuple[dict[str, Any], Path]:
    """A config whose second inbox belongs to another Qonto organization."""
    other_inbox = ws.root / name
    other_inbox.mkdir()
    raw = ws.config_dict(url)
    raw["folders"].append({
        "inbox": str(other_inbox), "done": str(other_inbox / "done"),
        "failed": str(other_inbox / "failed"), "login": OTHER_LOGIN,
        "secret_key_env": "QONTO_SECRET_KEY_OTHER",
    })
    return raw, other_inbox


async def test_folders_of_two_organizations(ws, qonto, start):
    emulator, url = qonto
    raw, other_inbox = with_other_organization(ws, url, "other")
    mine = ws.invoice("mine.pdf", "MINE")
    theirs = ws.invoice("theirs.pdf", "THEIRS", folder=other_inbox)
    shared = facturx_pdf(ws.root / "shared.pdf", "SHARED")
    (ws.inbox / "shared.pdf").write_bytes(shared.read_bytes())
    (other_inbox / "shared.pdf").write_bytes(shared.read_bytes())
    sha_mine, sha_theirs, sha_shared = sha256_of(mine), sha256_of(theirs), sha256_of(shared)
    cfg = config_mod.from_dict(raw, env=ENV, base_dir=ws.root)
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    assert set(emulator.invoices_of(LOGIN)) == {sha_mine, sha_shared}
    assert set(emulator.invoices_of(OTHER_LOGIN)) == {sha_theirs, sha_shared}
    assert names(other_inbox / "done") == {"theirs.pdf", "shared.pdf"}


async def test_symlinks_and_fifos_are_never_read(ws, qonto, start, _logs):
    emulator, url = qonto
    secret = ws.root / "private.pdf"
    facturx_pdf(secret, "PRIVATE")
    (ws.inbox / "link.pdf").symlink_to(secret)
    os.mkfifo(ws.inbox / "pipe.pdf")
    ws.invoice("real.pdf")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    assert names(ws.done) == {"real.pdf"}
    assert sha256_of(secret) not in emulator.invoices_of(LOGIN)
    assert (ws.inbox / "link.pdf").is_symlink() and (ws.inbox / "pipe.pdf").exists()
    skipped = {Path(e["path"]).name for e in events(_logs, "file_skipped")}
    assert skipped == {"link.pdf", "pipe.pdf"}


async def test_non_ascii_names_and_a_normalising_server(ws, qonto, start):
    emulator, url = qonto
    emulator.faults.normalize_names = "NFC"
    decomposed = "Facture e\u0301te\u0301.pdf"  # NFD, as macOS clients write it
    composed = "Facture \u00e9t\u00e9 2.pdf"
    a = ws.invoice(decomposed, "NFD")
    b = ws.invoice(composed, "NFC")
    sha_a, sha_b = sha256_of(a), sha256_of(b)
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    ids = emulator.invoices_of(LOGIN)
    assert await journal_row(ws, sha_a) is not None
    assert (await journal_row(ws, sha_a)).invoice_id == ids[sha_a]
    assert (await journal_row(ws, sha_b)).invoice_id == ids[sha_b]
    assert ids[sha_a] != ids[sha_b]


async def test_run_once_exits_1_when_a_file_failed(ws, qonto, start):
    _, url = qonto
    (ws.inbox / "bad.pdf").write_text("nope")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 1


async def test_server_rejection_is_isolated_by_splitting(ws, qonto, start, _logs):
    emulator, url = qonto
    emulator.faults.reject_marker = b"REJECT-ME"
    # One slot, held by a first request while the others wait: they go out together.
    emulator.faults.held = asyncio.Event()
    good = [ws.invoice("first.pdf", "F0")]
    running = await start(ws.config(url, upload={"concurrency": 1}))
    await wait_for(lambda: emulator.requests == 1, what="the first request")
    good += [ws.invoice(f"g{i}.pdf", f"G{i}") for i in range(3)]
    bad = ws.root / "bad.pdf"
    src = facturx_pdf(ws.root / "bad-src.pdf", "BAD")
    bad.write_bytes(src.read_bytes() + b"\n% REJECT-ME\n")
    bad.rename(ws.inbox / "bad.pdf")
    await wait_for(lambda: len(events(_logs, "file_queued")) == 5, what="all queued")
    emulator.faults.held.set()
    await wait_for(lambda: "bad.pdf.error.json" in names(ws.failed), what="bad.pdf failed")
    await wait_for(lambda: len(names(ws.done)) == 4, what="the rest done")
    await running.stop()
    shas = {sha256_of(ws.done / p.name) for p in good}
    assert set(emulator.invoices_of(LOGIN)) == shas
    assert [len(n) for _, _, n in emulator.log][:2] == [1, 4]  # then split by halves
    assert names(ws.failed) == {"bad.pdf", "bad.pdf.error.json"}
    report = json.loads((ws.failed / "bad.pdf.error.json").read_text())
    assert report["reason"] == "rejected_by_qonto"
    assert "invoice number is missing" in report["detail"]
    assert report["http_status"] == 422
    assert events(_logs, "batch_split")


async def test_unauthorized_pauses_then_resumes(ws, qonto, start, _logs):
    emulator, url = qonto
    emulator.faults.unauthorized = True
    running = await start(ws.config(url))
    ws.invoice("wait.pdf")
    await wait_for(lambda: len(events(_logs, "org_paused")) >= 2, what="two pauses")
    assert names(ws.inbox) == {"wait.pdf"} and not names(ws.failed)
    emulator.faults.unauthorized = False
    await wait_for(lambda: "wait.pdf" in names(ws.done), what="wait.pdf in done/")
    paused = events(_logs, "org_paused")
    assert all(e["status"] == 401 and e["hint"] for e in paused)
    assert paused[1]["pause_s"] > paused[0]["pause_s"]  # the pause grows
    assert await running.stop() == 0


async def test_forbidden_organization_waits_while_others_go_on(ws, qonto, start, _logs):
    emulator, url = qonto
    emulator.faults.forbidden_logins = {OTHER_LOGIN}
    raw, other_inbox = with_other_organization(ws, url, "italy")
    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    ws.invoice("it.pdf", "IT", folder=other_inbox)
    ws.invoice("fr.pdf", "FR")
    await wait_for(lambda: "fr.pdf" in names(ws.done), what="fr.pdf in done/")
    await wait_for(lambda: any(e["status"] == 403 for e in events(_logs, "org_paused")),
                   what="403 pause")
    assert names(other_inbox) == {"it.pdf"}
    assert not emulator.invoices_of(OTHER_LOGIN)
    assert await running.stop() == 0
    assert names(other_inbox) == {"it.pdf"}


async def recorded_before_a_crash(ws: Workspace, name: str) -> tuple[Path, str]:
    """A file whose invoice_id was committed, as if the daemon died right after."""
    path = ws.invoice(name)
    sha = sha256_of(path)
    journal = await Journal.open(ws.db)
    await journal.enqueue(LOGIN, sha, path, path.name, path.stat().st_size)
    await journal.record_imported(LOGIN, {sha: "11111111-2222-3333-4444-555555555555"})
    await journal.close()
    return path, sha


async def test_interrupted_state_is_reconciled_at_start(ws, qonto, start):
    """An invoice_id recorded just before a crash: the file goes to done/ without an upload."""
    emulator, url = qonto
    path, sha = await recorded_before_a_crash(ws, "crash.pdf")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    assert emulator.requests == 0
    assert names(ws.done) == {"crash.pdf"}
    assert (await journal_row(ws, sha)).state == "done"


async def test_moved_but_not_marked_is_marked(ws, qonto, start):
    emulator, url = qonto
    path, sha = await recorded_before_a_crash(ws, "moved.pdf")
    ws.done.mkdir(parents=True)
    path.rename(ws.done / "moved.pdf")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    row = await journal_row(ws, sha)
    assert row.state == "done" and row.path == ws.done / "moved.pdf"


async def test_sigterm_style_stop_keeps_queued_files(ws, qonto, start):
    emulator, url = qonto
    emulator.faults.server_error = 1.0  # nothing gets through
    running = await start(ws.config(url))
    ws.invoice("stay.pdf")
    await wait_for(lambda: emulator.requests >= 2, what="a few failed attempts")
    assert await running.stop() == 0
    assert names(ws.inbox) == {"stay.pdf"}
    journal = await Journal.open(ws.db)
    try:
        (row,) = await journal.in_state("queued")
        assert row.last_error and "HTTP 5" in row.last_error
    finally:
        await journal.close()
    assert isinstance(emulator, Emulator)


async def test_stop_lets_a_request_in_flight_finish_and_records_it(ws, qonto, start):
    emulator, url = qonto
    emulator.faults.slow, emulator.faults.slow_s = 1.0, 1.0
    running = await start(ws.config(url, service={"shutdown_grace_seconds": 10.0}))
    ws.invoice("slow.pdf")
    await wait_for(lambda: emulator.requests >= 1, what="the request to start")
    assert await running.stop() == 0
    assert names(ws.done) == {"slow.pdf"}
    assert (await journal_row(ws, sha256_of(ws.done / "slow.pdf"))).state == "done"


async def test_stop_after_the_grace_period_cancels_and_keeps_the_file(ws, qonto, start, _logs):
    emulator, url = qonto
    emulator.faults.slow, emulator.faults.slow_s = 1.0, 30.0
    running = await start(ws.config(
        url, service={"shutdown_grace_seconds": 0.5}, upload={"timeout_seconds": 60.0}))
    path = ws.invoice("stuck.pdf")
    await wait_for(lambda: emulator.requests >= 1, what="the request to start")
    assert await running.stop() == 0
    assert events(_logs, "daemon_cancelling")
    assert names(ws.inbox) == {"stuck.pdf"}
    row = await journal_row(ws, sha256_of(path))
    assert row.state in ("queued", "sending") and row.invoice_id is None


async def test_second_stop_request_is_immediate(ws, qonto, start):
    emulator, url = qonto
    emulator.faults.slow, emulator.faults.slow_s = 1.0, 30.0
    running = await start(ws.config(
        url, service={"shutdown_grace_seconds": 60.0}, upload={"timeout_seconds": 60.0}))
    ws.invoice("stuck.pdf")
    await wait_for(lambda: emulator.requests >= 1, what="the request to start")
    running.service.request_stop("first")
    await asyncio.sleep(0.2)
    assert not running.task.done()
    running.service.request_stop("second")
    assert await asyncio.wait_for(running.task, 5) == 0
    assert names(ws.inbox) == {"stuck.pdf"}


async def test_large_file_near_the_limit_is_sent_whole(ws, qonto, start):
    emulator, url = qonto
    big = ws.inbox / "scan-large.pdf"
    big.write_bytes(b"%PDF-1.7\n" + os.urandom(4_900_000) + b"\n%%EOF\n")
    ws.invoice("small.pdf")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 60) == 0
    assert sha256_of(ws.done / "scan-large.pdf") in emulator.invoices_of(LOGIN)
    assert len(emulator.invoices_of(LOGIN)) == 2


async def test_sandbox_staging_token(ws, start, _logs):
    """Without the staging token the sandbox answers its login page with a 200: never a success."""
    from daemon.testing.emulator import serve

    emulator = Emulator({LOGIN: "s3cret-key-for-tests"}, staging_token="stg-token")
    async with serve(emulator) as url:
        ws.invoice("a.pdf")
        running = await start(ws.config(url))
        await wait_for(lambda: len(events(_logs, "batch_retry")) >= 2, what="retries")
        assert await running.stop() == 0
        assert names(ws.inbox) == {"a.pdf"} and not emulator.invoices
        assert "not JSON" in events(_logs, "batch_retry")[0]["error"]

        raw = ws.config_dict(url)
        raw["qonto"]["staging_token_env"] = "STAGING"
        cfg = config_mod.from_dict(raw, env={**ENV, "STAGING": "stg-token"}, base_dir=ws.root)
        assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
        assert names(ws.done) == {"a.pdf"} and len(emulator.invoices) == 1


async def test_file_replaced_during_upload_is_not_filed_as_imported(ws, qonto, start):
    """The ERP re-exports a file while its first version is on the wire: both get imported."""
    emulator, url = qonto
    emulator.faults.slow, emulator.faults.slow_s = 1.0, 1.0
    running = await start(ws.config(url))
    path = ws.invoice("F.pdf", "FIRST")
    first = sha256_of(path)
    await wait_for(lambda: emulator.requests >= 1, what="the first upload to start")
    emulator.faults.slow = 0.0
    replacement = facturx_pdf(ws.root / "second.pdf", "SECOND", 999)
    os.replace(replacement, path)
    second = sha256_of(path)
    await wait_for(lambda: second in emulator.invoices_of(LOGIN), what="the new version imported")
    await wait_for(lambda: not names(ws.inbox), what="the inbox to empty")
    assert first in emulator.invoices_of(LOGIN)
    (done,) = [p for p in ws.done.iterdir()]
    assert sha256_of(done) == second
    assert (await journal_row(ws, second)).state == "done"
    assert await running.stop() == 0


async def test_names_that_escape_alike_are_each_imported_under_their_own_id(ws, qonto, start):
    emulator, url = qonto
    a = ws.invoice('q"uote.pdf', "QUOTE")
    b = ws.invoice("q%22uote.pdf", "PERCENT")
    sha_a, sha_b = sha256_of(a), sha256_of(b)
    cfg = ws.config(url, upload={"linger_seconds": 0.5})
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    ids = emulator.invoices_of(LOGIN)
    assert (await journal_row(ws, sha_a)).invoice_id == ids[sha_a]
    assert (await journal_row(ws, sha_b)).invoice_id == ids[sha_b]
    assert emulator.requests == 2  # never in one request


async def test_a_lone_file_never_waits_for_the_linger_when_a_slot_is_free(ws, qonto, start, _logs):
    emulator, url = qonto
    # An hour of linger: if batching held a lone file back, it would never arrive in time.
    running = await start(ws.config(url, upload={"linger_seconds": 3600.0}))
    await wait_for(lambda: events(_logs, "daemon_started"), what="the daemon to start")
    ws.invoice("alone.pdf")
    await wait_for(lambda: "alone.pdf" in names(ws.done), what="alone.pdf in done/")
    ws.invoice("next.pdf")
    await wait_for(lambda: "next.pdf" in names(ws.done), what="next.pdf in done/")
    assert [len(n) for _, _, n in emulator.log] == [1, 1]
    assert await running.stop() == 0


async def test_a_long_outage_is_one_error_then_one_line_when_qonto_is_back(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    emulator.faults.server_error = 1.0
    running = await start(ws.config(url, log={"unreachable_alert_seconds": 0.5}))
    ws.invoice("a.pdf")
    await wait_for(lambda: events(_logs, "qonto_unreachable"), what="the alert")
    (alert,) = events(_logs, "qonto_unreachable")
    assert alert["org"] == LOGIN and alert["since"] and alert["last_error"]
    assert alert["log_level"] == "error" and url in alert["hint"]  # never answered yet
    emulator.faults.server_error = 0.0
    await wait_for(lambda: "a.pdf" in names(ws.done), what="a.pdf imported once Qonto is back")
    await wait_for(lambda: events(_logs, "qonto_reachable"), what="the all-clear")
    assert len(events(_logs, "qonto_unreachable")) == 1  # said once for the outage
    assert await running.stop() == 0


async def test_a_heartbeat_of_one_second_comes_every_second(ws, qonto, start, _logs):
    from daemon.timing import Intervals

    _, url = qonto
    # STATUS= every 5 s, as in production: the heartbeat keeps its own time.
    running = await start(ws.config(url, log={"heartbeat_seconds": 1.0}),
                          intervals=Intervals(status_s=5.0))
    await wait_for(lambda: len(events(_logs, "heartbeat")) >= 3, timeout_s=4.5,
                   what="three beats before the first STATUS= interval is over")
    assert await running.stop() == 0


async def test_an_image_never_waits_behind_pdfs_that_are_slow_to_parse(ws, qonto, start, _logs):
    from daemon.commands.demo import tiny_png
    from daemon.testing.samples import slow_pdf

    emulator, url = qonto
    slow = slow_pdf(20_000_000)  # seconds of pypdf work each
    for i in range(8):
        (ws.root / f".s{i}").write_bytes(slow)
        (ws.root / f".s{i}").rename(ws.inbox / f"slow-{i}.pdf")
    running = await start(ws.config(url, validation={"parse_timeout_seconds": 120.0}))
    await wait_for(lambda: sum(e["event"] == "file_parsing" for e in _logs) >= 2,
                   what="the parsers busy")
    (ws.root / ".scan").write_bytes(tiny_png())
    (ws.root / ".scan").rename(ws.inbox / "scan.png")
    def imported() -> list[str]:
        return [e["path"].name for e in events(_logs, "file_imported")]

    await wait_for(lambda: "scan.png" in imported(), timeout_s=60, what="the scan imported")
    assert imported()[0] == "scan.png"  # before any of the slow PDFs
    assert await running.stop() == 0


async def test_after_a_pause_one_request_probes_the_key_before_the_others(
    ws, qonto, start, _logs
):
    """At concurrency 8, each pause that ends sends one request, not eight, to be
    refused: Qonto blocks a server after 200 refused logins an hour."""
    emulator, url = qonto
    emulator.faults.unauthorized = True
    for i in range(40):
        ws.invoice(f"p{i}.pdf", f"P-{i}")
    cfg = ws.config(url, upload={"concurrency": 8, "linger_seconds": 0.0,
                                 "auth_pause_initial_seconds": 0.2,
                                 "auth_pause_max_seconds": 0.2})
    running = await start(cfg)
    await wait_for(lambda: len(events(_logs, "org_paused")) >= 5, what="five pauses")
    refused, pauses = emulator.statuses.get(401, 0), len(events(_logs, "org_paused"))
    assert refused <= 8 + pauses  # the first burst, then one probe per pause
    emulator.faults.unauthorized = False  # the key works again: everything goes
    await wait_for(lambda: len(names(ws.done)) >= 40, timeout_s=60, what="all imported")
    assert await running.stop() == 0
