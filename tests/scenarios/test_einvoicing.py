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
    invoice_number,
    names,
    sending,
    sha256_of,
    to_toml,
    wait_for,
)

from daemon import cli
from daemon.commands.demo import tiny_png
from daemon.journal import Journal
from daemon.testing.samples import facturx_pdf


def unreachable(ws: Workspace, name: str) -> Path:
    tmp = ws.root / f".{name}"
    facturx_pdf(tmp, invoice_number(name).upper(), buyer="UNREACHABLE SARL")
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


def sending_cfg(ws: Workspace, url: str, **sections: Any):
    from daemon import config as config_mod

    raw = sending(ws, url, **sections)
    raw["einvoicing"]["recheck_seconds"] = 0.3
    return config_mod.from_dict(raw, env=ENV, base_dir=ws.root)


def level(line: dict[str, Any]) -> str:
    return str(line["log_level"])


async def test_an_import_is_sent_and_followed_to_a_final_code(ws, fast, start, _logs, capsys):
    emulator, url = fast
    emulator.lifecycle = (200, 201, 202, 212)
    running = await start(sending_cfg(ws, url))
    ws.invoice("paid.pdf", "PAID-1")
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    await wait_for(lambda: any(e["code"] == 212 for e in events(_logs, "einvoice_status_changed")),
                   what="the final code")
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert list(emulator.sent) == [invoice_id] and emulator.sent[invoice_id].calls == 1
    changes = events(_logs, "einvoice_status_changed")
    assert [e["code"] for e in changes] == [200, 201, 202, 212]  # each logged once
    assert changes[-1]["label"] == "Encaissée" and level(changes[-1]) == "info"
    # Each event keeps its own time, as Qonto sent it (strings, one step apart).
    stamps = [e["at"] for e in changes]
    assert len(set(stamps)) == 4 and all(isinstance(t, str) and "T" in t for t in stamps)
    # Tracking stopped: no more look at it.
    await wait_for(lambda: _states(ws) == ["final"], what="the journal's final state")
    checks = emulator.einvoice_requests
    await asyncio.sleep(1.0)  # several poll intervals: nothing must happen
    assert emulator.einvoice_requests == checks
    assert await running.stop() == 0
    row = await lookup_json(ws, ws.done / "paid.pdf", capsys)
    assert row["einvoice_state"] == "final" and row["einvoice_held_for"] is None
    assert row["einvoicing_status"] == "approved"  # Qonto's word, not an invented one
    assert row["einvoice_lifecycle"] == [200, 201, 202, 212]
    assert [e["code"] for e in row["einvoice_events"]] == [200, 201, 202, 212]
    assert [e["at"] for e in row["einvoice_events"]] == stamps
    assert all(e["reason"] is None and e["reason_message"] is None
               for e in row["einvoice_events"])


async def test_a_buyer_s_refusal_is_an_error_with_qonto_s_reason(ws, fast, start, _logs):
    emulator, url = fast
    emulator.lifecycle = (200, 201, 202, 210)
    running = await start(sending_cfg(ws, url))
    ws.invoice("refused.pdf", "REF-1")
    await wait_for(lambda: events(_logs, "einvoice_failed"), what="the failure")
    (refusal,) = [e for e in events(_logs, "einvoice_status_changed") if e["code"] == 210]
    assert level(refusal) == "error" and refusal["label"] == "Refusée"
    assert refusal["reason"] == "REF_CT" and "conteste" in refusal["reason_message"]
    (failed,) = events(_logs, "einvoice_failed")
    assert level(failed) == "error" and failed["einvoicing_status"] == "declined"
    assert failed["reason"] == "REF_CT" and failed["path"] == ws.inbox / "refused.pdf"
    assert failed["hint"] and failed["invoice_id"] in emulator.sent
    assert await running.stop() == 0


async def test_a_failed_submission_without_a_213_event_is_seen_at_once(ws, fast, start, _logs):
    emulator, url = fast
    emulator.lifecycle = (200,)
    emulator.einvoicing_status_always = "submission_failed"  # the status alone says it
    running = await start(sending_cfg(ws, url))
    ws.invoice("bad.pdf", "BAD-1")
    await wait_for(lambda: events(_logs, "einvoice_failed"), what="the failure")
    (failed,) = events(_logs, "einvoice_failed")
    assert failed["einvoicing_status"] == "submission_failed" and level(failed) == "error"
    assert not events(_logs, "einvoice_tracking_ended")  # not 30 days of silence
    checks = emulator.einvoice_requests
    await asyncio.sleep(1.0)
    assert emulator.einvoice_requests == checks  # tracking ended
    assert await running.stop() == 0


async def test_a_dispute_is_a_warning_and_a_status_that_recurs_is_logged_again(
    ws, fast, start, _logs
):
    emulator, url = fast
    emulator.lifecycle = (200, 207, 209, 207, 208, 214)
    running = await start(sending_cfg(ws, url))
    ws.invoice("disputed.pdf", "DIS-1")
    await wait_for(lambda: any(e["code"] == 214 for e in events(_logs, "einvoice_status_changed")),
                   what="the last code")
    changes = events(_logs, "einvoice_status_changed")
    assert [e["code"] for e in changes] == [200, 207, 209, 207, 208, 214]
    for change in changes:
        expected = "warning" if change["code"] in (207, 208) else "info"
        assert level(change) == expected, change
    assert all(c["hint"] for c in changes if c["code"] in (207, 208))
    assert changes[-1]["label"] == "Visée"
    assert await running.stop() == 0


async def test_a_client_not_reachable_yet_is_held_then_sent_by_itself(
    ws, fast, start, _logs, capsys
):
    emulator, url = fast
    running = await start(sending_cfg(ws, url))
    unreachable(ws, "later.pdf")
    await wait_for(lambda: events(_logs, "einvoice_held"), what="the hold")
    (held,) = events(_logs, "einvoice_held")
    assert level(held) == "error" and held["held_for"] == "client" and held["hint"]
    assert not emulator.sent  # never called while Qonto says the client is not reachable
    assert "later.pdf" in names(ws.done)  # imported all the same
    await asyncio.sleep(0.8)  # checked again meanwhile: said once
    assert len(events(_logs, "einvoice_held")) == 1
    row = await lookup_json(ws, ws.done / "later.pdf", capsys)
    assert row["einvoice_state"] == "held" and row["einvoice_held_for"] == "client"
    # The client registers in the directory: the e-invoice goes out by itself.
    for client in emulator.clients.values():
        client.e_invoicing_reachable = True
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    assert events(_logs, "einvoice_submitted")[0]["was_held_for"] == "client"
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert emulator.sent[invoice_id].calls == 1
    assert await running.stop() == 0


async def test_with_reads_refused_the_send_is_judged_by_its_refusal(ws, fast, start, _logs):
    emulator, url = fast
    emulator.restricted_reads.add(LOGIN)  # an API key that may not read clients or settings
    running = await start(sending_cfg(ws, url))
    unreachable(ws, "later.pdf")
    await wait_for(lambda: events(_logs, "einvoice_held"), what="the hold")
    (held,) = events(_logs, "einvoice_held")
    assert held["held_for"] == "client" and "412" in held["detail"] and held["trace_id"]
    assert not events(_logs, "einvoice_rejected") and not events(_logs, "org_paused")
    for client in emulator.clients.values():
        client.e_invoicing_reachable = True
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    assert await running.stop() == 0


async def test_e_invoicing_off_holds_e_invoices_while_uploads_go_on(ws, fast, start, _logs):
    emulator, url = fast
    emulator.sending_status[LOGIN] = "pending_creation"
    running = await start(sending_cfg(ws, url))
    for n in range(6):
        ws.invoice(f"f{n}.pdf", f"F-{n}")
    await wait_for(lambda: len(names(ws.done)) == 6, what="six imports")
    await wait_for(lambda: len(_held(ws)) == 6, what="six held")
    assert [e["held_for"] for e in events(_logs, "einvoice_held")] == ["organization"]  # once
    assert not events(_logs, "org_paused") and not emulator.sent
    ws.invoice("f6.pdf", "F-6")  # uploads go on at once
    await wait_for(lambda: "f6.pdf" in names(ws.done), what="a seventh import")
    emulator.sending_status[LOGIN] = "enabled"
    await wait_for(lambda: len(emulator.sent) == 7, what="every e-invoice sent")
    assert await running.stop() == 0


def _states(ws: Workspace) -> list[str]:
    """The e-invoices' states, as another process reading the journal sees them."""
    import sqlite3

    with sqlite3.connect(ws.db) as conn:
        rows = conn.execute("SELECT state FROM einvoices ORDER BY created_at").fetchall()
    conn.close()
    return [r[0] for r in rows]


def _held(ws: Workspace) -> list[str]:
    return [s for s in _states(ws) if s == "held"]


async def test_a_403_on_the_send_holds_e_invoicing_never_uploads(ws, fast, start, _logs):
    emulator, url = fast
    emulator.einvoice_faults.forbidden_logins.add(LOGIN)
    running = await start(sending_cfg(ws, url))
    ws.invoice("a.pdf", "A-1")
    await wait_for(lambda: events(_logs, "einvoice_held"), what="the hold")
    assert events(_logs, "einvoice_held")[0]["held_for"] == "organization"
    ws.invoice("b.pdf", "B-1")
    await wait_for(lambda: "b.pdf" in names(ws.done), what="b.pdf imported meanwhile")
    assert not events(_logs, "org_paused")
    emulator.einvoice_faults.forbidden_logins.clear()
    await wait_for(lambda: len(emulator.sent) == 2, what="both sent once allowed")
    assert await running.stop() == 0


async def test_content_imported_elsewhere_is_e_invoiced_from_an_e_invoicing_folder(
    ws, fast, start, _logs
):
    emulator, url = fast
    from daemon import config as config_mod

    plain_inbox = ws.root / "plain"
    plain_inbox.mkdir()
    raw = sending(ws, url)
    raw["einvoicing"]["recheck_seconds"] = 0.3
    raw["folders"].append({"inbox": str(plain_inbox), "done": str(plain_inbox / "done"),
                           "failed": str(plain_inbox / "failed")})
    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    first = ws.invoice("wrong-folder.pdf", "WF-1", folder=plain_inbox)
    (plain_inbox / "scan.png").write_bytes(tiny_png())
    await wait_for(lambda: names(plain_inbox / "done") == {"wrong-folder.pdf", "scan.png"},
                   what="both imported, not e-invoiced")
    assert not emulator.sent
    # Dropped again where it belongs: the same invoice, now sent by e-invoice.
    (ws.inbox / "again.pdf").write_bytes((plain_inbox / "done" / first.name).read_bytes())
    (ws.inbox / "scan.png").write_bytes(tiny_png())
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the e-invoice")
    await wait_for(lambda: "scan.png.error.json" in names(ws.failed), what="the PNG refused")
    (dup,) = [e for e in events(_logs, "file_duplicate") if e["path"].name == "again.pdf"]
    assert dup["einvoice"] == "requested"
    report = json.loads((ws.failed / "scan.png.error.json").read_text())
    assert report["reason"] == "not_facturx"  # past the folder's policy, like a new file
    # A third drop of the same content: the invoice is e-invoiced once.
    (ws.inbox / "third.pdf").write_bytes((ws.done / "again.pdf").read_bytes())
    await wait_for(lambda: len(events(_logs, "file_duplicate")) >= 2, what="the third drop")
    await asyncio.sleep(0.3)
    (invoice_id,) = [i for s, i in emulator.invoices_of(LOGIN).items()
                     if s == sha256_of(ws.done / "again.pdf")]
    assert list(emulator.sent) == [invoice_id] and emulator.sent[invoice_id].calls == 1
    assert await running.stop() == 0


async def test_send_einvoice_sends_an_invoice_imported_without_e_invoicing(
    ws, fast, start, _logs, capsys
):
    emulator, url = fast
    from daemon import config as config_mod

    raw = ws.config_dict(url, einvoicing=dict(FAST_EINVOICING, recheck_seconds=0.3))
    running = await start(config_mod.from_dict(raw, env=ENV, base_dir=ws.root))
    ws.invoice("a.pdf", "A-1")
    ws.invoice("b.pdf", "B-1")
    await wait_for(lambda: names(ws.done) == {"a.pdf", "b.pdf"}, what="both imported")
    assert not emulator.sent
    toml = ws.root / "send.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    ids = emulator.invoices_of(LOGIN)
    b_id = ids[sha256_of(ws.done / "b.pdf")]
    capsys.readouterr()
    assert await command("send-einvoice", "--config", str(toml), str(ws.done / "a.pdf"),
                         "--invoice-id", b_id) == 0
    out = capsys.readouterr().out
    assert "will send: " in out and out.count("will send") == 2
    await wait_for(lambda: len(emulator.sent) == 2, what="both sent by the running daemon")
    # Asked again: nothing is sent twice.
    assert await command("send-einvoice", "--config", str(toml), str(ws.done / "a.pdf")) == 0
    assert "already " in capsys.readouterr().out
    await asyncio.sleep(0.5)
    assert all(sent.calls == 1 for sent in emulator.sent.values())
    assert await command("send-einvoice", "--config", str(toml), str(toml)) == 1  # a stranger
    assert "not an invoice this daemon imported" in capsys.readouterr().err
    assert await running.stop() == 0


async def test_faults_on_send_and_tracking_are_retried(ws, fast, start, _logs):
    emulator, url = fast
    faults = emulator.einvoice_faults
    # 5xx for the first five calls: the reads before the send (they say nothing then:
    # the send goes and is judged), then the send itself.
    faults.server_error_first = 5
    from daemon import config as config_mod

    running = await start(config_mod.from_dict(sending(ws, url), env=ENV, base_dir=ws.root))
    ws.invoice("a.pdf", "A-1")
    await wait_for(lambda: events(_logs, "einvoice_submitted"), what="the send")
    assert events(_logs, "einvoice_send_retry")
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
    running = await start(sending_cfg(ws, url))
    ws.invoice("ok.pdf", "OK-1")
    unreachable(ws, "no.pdf")
    await wait_for(lambda: events(_logs, "einvoice_held"), what="the hold")
    await wait_for(lambda: any(e["code"] == 202 for e in events(_logs, "einvoice_status_changed")),
                   what="delivered")
    assert await running.stop() == 0
    toml = ws.root / "status.toml"
    toml.write_text(to_toml(sending(ws, url)), encoding="utf-8")
    capsys.readouterr()
    assert await command("status", "--json", "--config", str(toml)) == 0
    (org,) = json.loads(capsys.readouterr().out)["organizations"]
    assert org["einvoices"] == {"waiting": 0, "held": 1, "submitted": 0, "delivered": 1,
                                "action_needed": 0, "refused": 0}
    assert await command("status", "--config", str(toml)) == 0
    assert "1 delivered, 0 refused or rejected" in capsys.readouterr().out


def test_the_tracking_interval_doubles_up_to_its_bound_for_ever():
    from daemon.config import EinvoicingConfig
    from daemon.flow.einvoice import poll_interval_s

    settings = EinvoicingConfig(poll_initial_s=60.0, poll_max_s=600.0, track_days=30.0)
    assert [poll_interval_s(settings, n) for n in range(6)] == [60, 120, 240, 480, 600, 600]
    assert poll_interval_s(settings, 5_000) == 600.0  # a month of checks: no overflow


async def test_run_once_sends_the_e_invoices_before_it_exits(ws, fast, start, _logs):
    emulator, url = fast
    ws.invoice("cron.pdf", "CRON-1")
    code = await asyncio.wait_for((await start(sending_cfg(ws, url), once=True)).task, 60)
    assert code == 0
    (invoice_id,) = emulator.invoices_of(LOGIN).values()
    assert emulator.sent[invoice_id].calls == 1 and events(_logs, "einvoice_submitted")


async def test_run_once_retries_a_send_then_says_what_is_left(ws, fast, start, _logs):
    emulator, url = fast
    emulator.einvoice_faults.server_error_first = 2  # two 5xx, then it goes
    ws.invoice("later.pdf", "CRON-2")
    raw = sending(ws, url, log={"unreachable_alert_seconds": 30.0})
    raw["upload"]["backoff_initial_seconds"] = 0.05
    cfg = config_from(ws, raw)
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 60) == 0
    assert events(_logs, "einvoice_submitted") and not events(_logs, "einvoices_left")
    # Qonto keeps failing: the run gives up after unreachable_alert_seconds, exit 1.
    emulator.einvoice_faults.server_error = 1.0
    ws.invoice("never.pdf", "CRON-3")
    raw = sending(ws, url, log={"unreachable_alert_seconds": 1.0})
    _logs.clear()
    assert await asyncio.wait_for((await start(config_from(ws, raw), once=True)).task, 60) == 1
    (left,) = events(_logs, "einvoices_left")
    assert left["count"] == 1 and left["log_level"] == "error" and left["hint"]


def config_from(ws: Workspace, raw: dict[str, Any]):
    from daemon import config as config_mod

    return config_mod.from_dict(raw, env=ENV, base_dir=ws.root)


async def test_a_folder_that_stops_sending_by_e_invoice_drops_what_it_had_not_sent(
    ws, fast, start, _logs, capsys
):
    emulator, url = fast
    running = await start(sending_cfg(ws, url))
    unreachable(ws, "held.pdf")
    await wait_for(lambda: events(_logs, "einvoice_held"), what="the hold")
    assert await running.stop() == 0
    raw = sending(ws, url)
    raw["folders"][0]["send_by_einvoice"] = False  # the operator turns it off
    for client in emulator.clients.values():
        client.e_invoicing_reachable = True  # the client would be reachable now
    _logs.clear()
    running = await start(config_from(ws, raw))
    await wait_for(lambda: events(_logs, "einvoices_dropped"), what="the drop")
    (dropped,) = events(_logs, "einvoices_dropped")
    assert dropped["count"] == 1 and dropped["inbox"] == ws.inbox
    await asyncio.sleep(0.8)  # long past a recheck: still nothing sent
    assert not emulator.sent
    assert await running.stop() == 0
    row = await lookup_json(ws, ws.done / "held.pdf", capsys)
    assert row["einvoice_state"] == "none"
    _logs.clear()
    running = await start(config_from(ws, raw))  # said once: nothing left to drop
    await asyncio.sleep(0.5)
    assert await running.stop() == 0
    assert not events(_logs, "einvoices_dropped")
