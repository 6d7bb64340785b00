"""Imported Factur-X invoices sent by e-invoice and followed to the end of their lifecycle.

The daemon runs for real against the emulator on loopback, whose lifecycles
move in fractions of a second.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ENV,
    FAST_EINVOICING,
    LOGIN,
    Workspace,
    events,
    names,
    sending,
    sha256_of,
    to_toml,
    wait_for,
)

from daemon import cli
from daemon.journal import Journal
from daemon.testing.samples import facturx_pdf


def unreachable(ws: Workspace, name: str) -> Path:
    tmp = ws.root / f".{name}"
    facturx_pdf(tmp, name.upper(), buyer="UNREACHABLE SARL")
    return tmp.rename(ws.inbox / name)


async def command(*argv: str) -> int:
    """A command as a user runs it (it has an event loop of its own)."""
    return await asyncio.to_thread(cli.main, list(argv))


async def lookup_json(ws: Workspace, path: Path, capsys) -> dict[str, Any]:
    toml = ws.root / "lookup.toml"
    toml.write_text(to_toml(sending(ws, "http://127.0.0.1:9")), encoding="utf-8")
    capsys.readouterr()
    assert await command("lookup", "--json", "--config", str(toml), str(path)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for key, value in ENV.items():  # for the commands run in this process
        monkeypatch.setenv(key, value)


@pytest.fixture
def fast(qonto):
    emulator, url = qonto
    emulator.lifecycle_step_s = 0.2
    return emulator, url


async def test_an_import_is_sent_and_followed_to_a_final_code(ws, fast, start, _logs, capsys):
    emulator, url = fast
    emulator.lifecycle = (200, 201, 202, 212)
    from daemon import config as config_mod

    running = await start(config_mod.from_dict(sending(ws, url), env=ENV, base_dir=ws.root))
    ws.invoice("paid.pdf", "PAID-1")
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    await wait_for(lambda: any(e["code"] == 212 for e in events(_logs, "einvoice_status_changed")),
                   what="the final code")
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert list(emulator.sent) == [invoice_id] and emulator.sent[invoice_id].calls == 1
    changes = events(_logs, "einvoice_status_changed")
    assert [e["code"] for e in changes] == [200, 201, 202, 212]  # each logged once
    assert changes[-1]["label"] == "Encaissée"
    # Tracking stopped: no more look at it.
    checks = emulator.einvoice_requests
    await asyncio.sleep(1.0)  # several poll intervals: nothing must happen
    assert emulator.einvoice_requests == checks
    assert await running.stop() == 0
    row = await lookup_json(ws, ws.done / "paid.pdf", capsys)
    assert row["einvoice_state"] == "final"
    assert row["einvoicing_status"] == "paid"
    assert row["einvoice_lifecycle"] == [200, 201, 202, 212]


async def test_a_refusal_is_recorded_then_retried_once_fixed(ws, fast, start, _logs, capsys):
    emulator, url = fast
    from daemon import config as config_mod

    running = await start(config_mod.from_dict(sending(ws, url), env=ENV, base_dir=ws.root))
    unreachable(ws, "nobody.pdf")
    await wait_for(lambda: events(_logs, "einvoice_rejected"), what="the refusal")
    (refusal,) = events(_logs, "einvoice_rejected")
    assert refusal["log_level"] == "error" and "not reachable" in refusal["detail"]
    assert "retry --einvoice" in refusal["hint"]
    assert "nobody.pdf" in names(ws.done)  # imported all the same
    sends = emulator.einvoice_requests
    await asyncio.sleep(0.6)
    assert emulator.einvoice_requests == sends  # not retried by itself
    row = await lookup_json(ws, ws.done / "nobody.pdf", capsys)
    assert row["einvoice_state"] == "rejected" and row["einvoice_lifecycle"] == []
    # The client is made reachable in Qonto; the accountant asks for a new try.
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    emulator.contents[invoice_id] = b""
    toml = ws.root / "retry.toml"
    toml.write_text(to_toml(sending(ws, url)), encoding="utf-8")
    capsys.readouterr()
    assert await command("retry", "--einvoice", "--config", str(toml),
                         str(ws.done / "nobody.pdf")) == 0
    assert "will send again" in capsys.readouterr().out
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the second send")
    assert list(emulator.sent) == [invoice_id]
    assert await running.stop() == 0


async def test_faults_on_send_and_tracking_are_retried(ws, fast, start, _logs):
    emulator, url = fast
    faults = emulator.einvoice_faults
    faults.server_error_first = 2  # the first send and its retry: 5xx
    from daemon import config as config_mod

    running = await start(config_mod.from_dict(sending(ws, url), env=ENV, base_dir=ws.root))
    ws.invoice("a.pdf", "A-1")
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    assert len(events(_logs, "einvoice_send_retry")) == 2
    faults.rate_limited = 1.0  # tracking now meets 429s...
    await wait_for(lambda: events(_logs, "einvoice_check_retry"), what="a tracking retry")
    faults.rate_limited = 0.0
    faults.drop_after = 1.0  # ...then answers lost on the way
    await wait_for(lambda: len(events(_logs, "einvoice_check_retry")) >= 2, what="a drop")
    faults.drop_after = 0.0
    await wait_for(lambda: any(e["code"] == 202 for e in events(_logs, "einvoice_status_changed")),
                   what="delivered")
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert emulator.sent[invoice_id].calls == 1
    assert await running.stop() == 0


async def test_a_lost_answer_to_the_send_never_submits_twice(ws, fast, start, _logs):
    emulator, url = fast
    emulator.einvoice_faults.drop_after = 1.0  # submitted, then the connection drops
    from daemon import config as config_mod

    running = await start(config_mod.from_dict(sending(ws, url), env=ENV, base_dir=ws.root))
    ws.invoice("a.pdf", "A-1")
    await wait_for(lambda: events(_logs, "einvoice_send_retry"), what="a lost answer")
    emulator.einvoice_faults.drop_after = 0.0
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert len(emulator.sent) == 1 and emulator.sent[invoice_id].calls >= 2  # safe to call again
    assert await running.stop() == 0


async def test_a_folder_that_does_not_send_never_calls_e_invoicing(ws, fast, start, _logs):
    emulator, url = fast
    running = await start(ws.config(url, einvoicing=FAST_EINVOICING))
    ws.invoice("plain.pdf", "P-1")
    await wait_for(lambda: "plain.pdf" in names(ws.done), what="plain.pdf in done/")
    await asyncio.sleep(0.5)
    assert emulator.einvoice_requests == 0 and not emulator.sent
    assert await running.stop() == 0
    journal = await Journal.open(ws.db)
    try:
        assert await journal.einvoices_of(LOGIN, sha256_of(ws.done / "plain.pdf")) == []
    finally:
        await journal.close()


async def test_status_counts_e_invoices(ws, fast, start, _logs, capsys):
    emulator, url = fast
    from daemon import config as config_mod

    raw = sending(ws, url)
    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    ws.invoice("ok.pdf", "OK-1")
    unreachable(ws, "no.pdf")
    await wait_for(lambda: events(_logs, "einvoice_rejected"), what="the refusal")
    await wait_for(lambda: any(e["code"] == 202 for e in events(_logs, "einvoice_status_changed")),
                   what="delivered")
    assert await running.stop() == 0
    toml = ws.root / "status.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    capsys.readouterr()
    assert await command("status", "--json", "--config", str(toml)) == 0
    (org,) = json.loads(capsys.readouterr().out)["organizations"]
    assert org["einvoices"] == {"waiting": 0, "submitted": 0, "delivered": 1, "refused": 1}
    assert await command("status", "--config", str(toml)) == 0
    assert "1 delivered, 1 refused or rejected" in capsys.readouterr().out


def test_the_tracking_interval_doubles_up_to_its_bound_for_ever():
    from daemon.config import EinvoicingConfig
    from daemon.flow.einvoice import poll_interval_s

    settings = EinvoicingConfig(poll_initial_s=60.0, poll_max_s=600.0, track_days=30.0)
    assert [poll_interval_s(settings, n) for n in range(6)] == [60, 120, 240, 480, 600, 600]
    assert poll_interval_s(settings, 5_000) == 600.0  # a month of checks: no overflow
