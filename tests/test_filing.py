"""Filing after a kill or into a folder that refuses: no second copy, no resend, no debris."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from helpers import ENV, LOGIN, Workspace, events, journal_row, names, sha256_of, wait_for

from daemon import config as config_mod
from daemon.journal import Journal


async def recorded(ws: Workspace, name: str, state: str) -> tuple[str, str]:
    """A file in the inbox whose journal row says imported (or failed), as a kill leaves it."""
    path = ws.invoice(name)
    sha = sha256_of(path)
    journal = await Journal.open(ws.db)
    try:
        if state == "imported":
            await journal.enqueue(LOGIN, sha, path, path.name, path.stat().st_size)
            await journal.record_imported(LOGIN, {sha: "11111111-2222-3333-4444-555555555555"})
        else:
            await journal.mark_failed(LOGIN, sha, path, path.name, path.stat().st_size,
                                      "rejected_by_qonto: the invoice number is missing")
    finally:
        await journal.close()
    return sha, "11111111-2222-3333-4444-555555555555"


async def test_kill_after_the_copy_got_its_name_leaves_one_copy(ws, qonto, start):
    """Killed between naming the copy in done/ and removing the original, and mid-copy."""
    emulator, url = qonto
    sha, invoice_id = await recorded(ws, "crash.pdf", "imported")
    ws.done.mkdir()
    shutil.copy2(ws.inbox / "crash.pdf", ws.done / "crash.pdf")  # the complete copy
    partial = ws.done / ".qonto-invoice-daemon.999999999.0.tmp"  # a copy cut short by the kill
    partial.write_bytes(b"%PDF-1.7 half")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    assert emulator.requests == 0
    assert os.listdir(ws.done) == ["crash.pdf"] and not names(ws.inbox)
    row = await journal_row(ws, sha)
    assert row.state == "done" and row.path == ws.done / "crash.pdf"
    assert row.invoice_id == invoice_id


async def test_kill_after_a_same_filesystem_link_leaves_one_copy(ws, qonto, start):
    emulator, url = qonto
    await recorded(ws, "linked.pdf", "imported")
    ws.done.mkdir()
    os.link(ws.inbox / "linked.pdf", ws.done / "linked.pdf")  # link done, unlink not yet
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 0
    assert os.listdir(ws.done) == ["linked.pdf"] and not names(ws.inbox)
    assert emulator.requests == 0


async def test_kill_after_a_failed_copy_got_its_name_leaves_one_copy(ws, qonto, start):
    emulator, url = qonto
    sha, _ = await recorded(ws, "bad.pdf", "failed")
    ws.failed.mkdir()
    shutil.copy2(ws.inbox / "bad.pdf", ws.failed / "bad.pdf")
    (ws.failed / "bad.pdf.error.json").write_text(json.dumps({"sha256": sha}))
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 30) == 1
    assert sorted(os.listdir(ws.failed)) == ["bad.pdf", "bad.pdf.error.json"]
    assert not names(ws.inbox) and emulator.requests == 0


async def test_a_rejected_file_that_failed_cannot_take_is_not_sent_again(
    ws, qonto, start, tmpfs, _logs
):
    """failed/ has room for a sidecar but not for the file: no resend, no orphan sidecars."""
    emulator, url = qonto
    emulator.faults.reject_marker = b"REJECT-ME"
    failed = tmpfs("failed-disk", size="8k")  # two pages: a sidecar fits, the invoice does not
    bad = ws.invoice("bad.pdf", "BAD")
    bad.write_bytes(bad.read_bytes() + b"\n% REJECT-ME\n" + os.urandom(12_000) + b"\n%%EOF\n")
    raw = ws.config_dict(url, watch={"rescan_seconds": 0.2})
    raw["folders"][0]["failed"] = str(failed)
    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    await wait_for(lambda: len(events(_logs, "file_move_failed")) >= 4, what="several rescans")
    assert emulator.requests == 1  # rejected once, never sent again
    assert os.listdir(failed) == []  # no sidecar left behind, however many tries
    moves = events(_logs, "file_move_failed")
    assert [e["log_level"] for e in moves[:2]] == ["error", "debug"]  # said once
    assert "space" in moves[0]["hint"]
    row = await journal_row(ws, sha256_of(bad))
    assert row.state == "failed" and row.path == bad
    # Space comes back: the file is filed with its reason, still without another upload.
    remount = await asyncio.create_subprocess_exec("mount", "-o", "remount,size=1m", str(failed))
    assert await remount.wait() == 0
    await wait_for(lambda: "bad.pdf" in names(failed), what="bad.pdf in failed/")
    report = json.loads((failed / "bad.pdf.error.json").read_text())
    assert report["reason"] == "rejected_by_qonto" and "invoice number" in report["detail"]
    assert emulator.requests == 1
    assert await running.stop() == 0


def test_each_filesystem_error_has_its_own_hint():
    import errno
    from pathlib import Path

    from daemon.errors import os_hint

    folder = Path("/srv/erp/done")
    hints = {
        code: os_hint(OSError(code, os.strerror(code)), folder)
        for code in (errno.ENOSPC, errno.ENAMETOOLONG, errno.EACCES, errno.EROFS, errno.EIO)
    }
    assert "free some space" in hints[errno.ENOSPC]
    assert "name is too long" in hints[errno.ENAMETOOLONG]
    assert "permissions" in hints[errno.EACCES]
    assert "read-only" in hints[errno.EROFS]
    assert len(set(hints.values())) == len(hints)
    assert all(str(folder) in h for h in hints.values())
