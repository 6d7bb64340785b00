"""A real SIGKILL at the worst moments: mid-copy into another filesystem (no debris),
around an e-invoice send (nothing lost, nothing submitted twice)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest
from helpers import (
    ENV,
    LOGIN,
    Workspace,
    daemon,
    finish,
    log_events,
    seen,
    sending,
    sha256_of,
    to_toml,
    wait_for,
)

from daemon.journal import Journal


async def test_sigkill_during_a_copy_across_filesystems(ws: Workspace, qonto, tmpfs):
    _, url = qonto
    failed = tmpfs("failed", size="1g")
    big = ws.inbox / "scan-huge.pdf"
    with big.open("wb") as fh:  # too large: filed into failed/ by a long copy
        fh.write(b"%PDF-1.7\n")
        fh.truncate(400 * 1024 * 1024)
    # Too large for Qonto, yet small enough to be worth a copy into failed/ (10 x the limit).
    raw = ws.config_dict(url, upload={"max_file_bytes": 50_000_000})
    raw["folders"][0]["failed"] = str(failed)
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")

    def temporaries() -> list[str]:
        return [n for n in os.listdir(failed) if n.startswith(".qonto-invoice-daemon")]

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "run", "--config", str(toml),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    try:
        await wait_for(lambda: bool(temporaries()) or not big.exists(), what="the copy to start",
                       timeout_s=60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        left = temporaries()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert left and big.exists()  # killed mid-copy: a hidden partial copy is left
    # Start again: the half copy is cleaned and the file filed exactly once.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "run", "--config", str(toml), "--once",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    assert await asyncio.wait_for(proc.wait(), 120) == 1  # one failed file
    assert sorted(os.listdir(failed)) == ["scan-huge.pdf", "scan-huge.pdf.error.json"]
    assert not big.exists() and (failed / "scan-huge.pdf").stat().st_size == 400 * 1024 * 1024
    report = json.loads((failed / "scan-huge.pdf.error.json").read_text())
    assert report["reason"] == "too_large"


@pytest.mark.parametrize("held", ["send", "first check"])
async def test_sigkill_around_an_e_invoice_send_loses_nothing_and_submits_once(
    ws: Workspace, qonto, held
):
    emulator, url = qonto
    emulator.lifecycle_step_s = 0.2
    gate = asyncio.Event()
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(sending(ws, url)), encoding="utf-8")
    log = ws.root / "daemon.log"
    ws.invoice("a.pdf", "A-1")
    if held == "send":  # killed after the import is recorded, before Qonto takes the send
        emulator.einvoice_faults.held = gate
        wanted = 1
    else:  # killed after the send was accepted, before the first tracking answer
        wanted = 2
    proc = await daemon(toml, log)
    try:
        if held == "first check":
            await wait_for(lambda: emulator.sent, what="the send", timeout_s=60)
            emulator.einvoice_faults.held = gate
            wanted = emulator.einvoice_requests + 1
        await wait_for(lambda: emulator.einvoice_requests >= wanted, what="the held request",
                       timeout_s=60)
        proc.send_signal(signal.SIGKILL)
    finally:
        await finish(proc)
    assert "a.pdf" in os.listdir(ws.done)
    gate.set()
    await asyncio.sleep(0)
    emulator.einvoice_faults.held = None
    proc = await daemon(toml, log)
    try:
        (invoice_id,) = emulator.invoices_of(LOGIN).values()
        await wait_for(lambda: len(emulator.codes_now(invoice_id)) == 3
                       and emulator.einvoice_requests > wanted + 1, what="tracking again",
                       timeout_s=60)
        proc.send_signal(signal.SIGTERM)
    finally:
        code = await finish(proc)
    assert code == 0
    assert list(emulator.sent) == [invoice_id]  # one submission, whatever happened
    journal = await Journal.open(ws.db)
    try:
        (e,) = await journal.einvoices_of(LOGIN, sha256_of(ws.done / "a.pdf"))
        assert e.state in ("submitted", "final") and e.submitted_at
    finally:
        await journal.close()


async def test_sigkill_while_an_e_invoice_is_held_and_as_it_is_released(ws: Workspace, qonto):
    """Held in the journal across a kill; released once, sent once, nothing lost."""
    from daemon.testing.samples import facturx_pdf

    emulator, url = qonto
    emulator.lifecycle_step_s = 0.2
    raw = sending(ws, url)
    raw["einvoicing"]["recheck_seconds"] = 0.3
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    log = ws.root / "daemon.log"
    facturx_pdf(ws.root / ".later.pdf", "LATER-1", buyer="UNREACHABLE SARL").rename(
        ws.inbox / "later.pdf")

    async def state() -> tuple[str, str | None] | None:
        journal = await Journal.open_readonly(ws.db)
        assert journal is not None
        try:
            rows = await journal.einvoices_of(LOGIN, sha256_of(ws.done / "later.pdf"))
        finally:
            await journal.close()
        return (rows[0].state, rows[0].held_for) if rows else None

    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: seen(log, "einvoice_held"), what="the hold", timeout_s=60)
        proc.send_signal(signal.SIGKILL)
    finally:
        await finish(proc)
    assert await state() == ("held", "client")
    proc = await daemon(toml, log)  # held it stays, and is said once
    try:
        await wait_for(lambda: seen(log, "daemon_started"), what="the restart", timeout_s=60)
        for client in emulator.clients.values():
            client.e_invoicing_reachable = True
        await wait_for(lambda: emulator.sent, what="the release", timeout_s=60)
        proc.send_signal(signal.SIGKILL)  # before, or just after, its state is recorded
    finally:
        await finish(proc)
    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: (ws.root / "daemon.log").exists() and seen(
            log, "einvoice_status_changed"), what="tracking", timeout_s=60)
        proc.send_signal(signal.SIGTERM)
    finally:
        assert await finish(proc) == 0
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert list(emulator.sent) == [invoice_id]  # one submission
    assert (await state() or ("",))[0] in ("submitted", "final")
    assert sum(e["event"] == "einvoice_held" for e in log_events(log)) == 1
