"""Business rules in the running daemon: what breaks them never reaches Qonto under
"require", is said under "warn", and what cannot be judged is never a failure.

The daemon runs for real against the emulator on loopback; the rules run in
real worker processes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

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

from daemon import cli, config
from daemon.testing.samples import embedded_pdf, facturx_pdf, no_siren_xml, totals_wrong_xml

LONG = 90.0  # the first check starts Saxon and compiles the rules: seconds on a loaded CI


def drop(ws: Workspace, name: str, *, xml: bytes | None = None, number: str = "R-1",
         folder: Path | None = None, **fields: Any) -> Path:
    tmp = ws.root / f".{name}"
    facturx_pdf(tmp, number, xml=xml, **fields)
    return tmp.rename((folder or ws.inbox) / name)


def cfg(ws: Workspace, url: str, raw: dict[str, Any]) -> config.Config:
    return config.from_dict(raw, env=ENV, base_dir=ws.root)


async def lookup(ws: Workspace, raw: dict[str, Any], path: Path, capsys) -> dict[str, Any]:
    toml = ws.root / "lookup.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    capsys.readouterr()
    code = await asyncio.to_thread(
        cli.main, ["lookup", "--json", "--config", str(toml), str(path)]
    )
    assert code == 0
    return json.loads(capsys.readouterr().out)


def sidecar(ws: Workspace, name: str) -> dict[str, Any]:
    return json.loads((ws.failed / f"{name}.error.json").read_text(encoding="utf-8"))


async def test_require_keeps_a_broken_invoice_from_qonto_and_says_which_rules(
    ws, qonto, start, _logs, capsys
):
    emulator, url = qonto
    raw = ws.config_dict(url, validation={"rules": "require"})
    running = await start(cfg(ws, url, raw))
    drop(ws, "good.pdf", number="R-GOOD")
    drop(ws, "totals.pdf", xml=totals_wrong_xml("R-BAD"))
    await wait_for(lambda: names(ws.failed) >= {"totals.pdf"} and "good.pdf" in names(ws.done),
                   timeout_s=LONG, what="both files filed")
    report = sidecar(ws, "totals.pdf")
    assert report["reason"] == "rules_failed" and "BR-CO-10" in report["detail"]
    (finding,) = [f for f in report["findings"] if f["rule"] == "BR-CO-10" and
                  f["ruleset"] == "cen"]
    assert finding["flag"] == "fatal" and finding["text"] and finding["location"].startswith("/")
    assert list(emulator.invoices_of(LOGIN)) == [sha256_of(ws.done / "good.pdf")]  # only it
    row = await lookup(ws, raw, ws.failed / "totals.pdf", capsys)
    assert row["state"] == "failed" and row["rules"]["verdict"] == "failed"
    assert "BR-CO-10" in row["rules"]["fatal"] and row["rules"]["versions"]["cen"] == "1.3.16"
    good = await lookup(ws, raw, ws.done / "good.pdf", capsys)
    assert good["rules"]["verdict"] == "passed"
    assert good["rules"]["checked"] == ["facturx", "cen", "brfr"]
    assert await running.stop() == 0


async def test_warn_imports_a_broken_invoice_and_names_the_rules(ws, qonto, start, _logs):
    emulator, url = qonto
    raw = ws.config_dict(url, validation={"rules": "warn"})
    running = await start(cfg(ws, url, raw))
    drop(ws, "nosiren.pdf", xml=no_siren_xml("R-2"))
    await wait_for(lambda: "nosiren.pdf" in names(ws.done), timeout_s=LONG, what="the import")
    (warned,) = events(_logs, "rules_warning")
    assert warned["rules"] == ["BR-FR-10_BT-30"] and warned["log_level"] == "warning"
    assert "BR-FR-10" in warned["detail"]
    assert len(emulator.invoices_of(LOGIN)) == 1
    assert await running.stop() == 0


async def test_an_e_invoicing_folder_requires_the_rules_and_an_e_invoice_profile(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    emulator.lifecycle_step_s = 0.2
    raw = sending(ws, url)
    raw["einvoicing"]["recheck_seconds"] = 0.3
    running = await start(cfg(ws, url, raw))
    drop(ws, "minimum.pdf", number="R-MIN", profile="minimum")
    drop(ws, "full.pdf", number="R-FULL")
    await wait_for(lambda: events(_logs, "einvoice_submitted") and names(ws.failed),
                   timeout_s=LONG, what="the send and the refusal")
    report = sidecar(ws, "minimum.pdf")
    assert report["reason"] == "rules_failed" and "FR-PROFILE" in report["detail"]
    assert "MINIMUM" in report["detail"]
    assert [f["rule"] for f in report["findings"]][0] == "FR-PROFILE"
    assert names(ws.done) >= {"full.pdf"} and len(emulator.invoices_of(LOGIN)) == 1
    assert await running.stop() == 0


async def test_what_the_rules_cannot_judge_is_held_under_require_and_imported_under_warn(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    lenient = ws.root / "lenient"
    lenient.mkdir()
    raw = ws.config_dict(url, validation={"rules": "require", "rules_timeout_seconds": 0.001})
    raw["folders"].append({"inbox": str(lenient), "done": str(lenient / "done"),
                           "failed": str(lenient / "failed"), "rules": "warn"})
    running = await start(cfg(ws, url, raw))
    drop(ws, "held.pdf", number="R-HELD")
    drop(ws, "passes.pdf", number="R-PASS", folder=lenient)
    await wait_for(lambda: "passes.pdf" in names(lenient / "done"), timeout_s=LONG,
                   what="the lenient folder's import")
    await wait_for(lambda: len(events(_logs, "rules_checking")) >= 4, timeout_s=LONG,
                   what="the held file checked again")
    unknown = events(_logs, "rules_unknown")
    imported = [e for e in unknown if e["log_level"] == "warning"]
    held = [e for e in unknown if e["log_level"] == "error"]
    assert len(imported) == 1 and imported[0]["path"] == lenient / "passes.pdf"
    assert len(held) == 1 and held[0]["path"] == ws.inbox / "held.pdf"  # said once
    assert "rules_timeout_seconds" in held[0]["detail"] and held[0]["hint"]
    assert "held.pdf" in names(ws.inbox) and not events(_logs, "file_failed")
    assert len(emulator.invoices_of(LOGIN)) == 1  # the held one never went
    assert await running.stop() == 0


async def test_an_external_entity_reads_nothing_of_the_server_into_anything(
    ws, qonto, start, _logs, capsys
):
    emulator, url = qonto
    secret = ws.root / "server-secret.txt"
    secret.write_text("SERVER-SECRET-9731")
    xml = totals_wrong_xml("R-XXE").decode().replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<!DOCTYPE rsm:CrossIndustryInvoice [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    ).replace("<ram:Name>Client SARL</ram:Name>", "<ram:Name>Client &xxe;SARL</ram:Name>")
    raw = ws.config_dict(url, validation={"rules": "require", "facturx": "require"})
    running = await start(cfg(ws, url, raw))
    embedded_pdf(ws.root / ".xxe.pdf", xml.encode()).rename(ws.inbox / "xxe.pdf")
    await wait_for(lambda: "xxe.pdf" in names(ws.failed), timeout_s=LONG, what="the refusal")
    refused = sidecar(ws, "xxe.pdf")
    assert refused["reason"] == "facturx_invalid" and "DOCTYPE" in refused["detail"]
    assert await running.stop() == 0
    row = await lookup(ws, raw, ws.failed / "xxe.pdf", capsys)
    everything = [json.dumps(_logs, default=str), json.dumps(row),
                  (ws.failed / "xxe.pdf.error.json").read_text()]
    everything.append(ws.db.read_bytes().decode("latin-1"))
    for wal in ws.db.parent.glob("*-wal"):
        everything.append(wal.read_bytes().decode("latin-1"))
    assert not any("SERVER-SECRET" in text for text in everything)
    assert not emulator.invoices_of(LOGIN)


async def test_a_re_export_after_the_platform_rejected_the_invoice_is_its_correction(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    emulator.lifecycle_step_s = 0.2
    emulator.lifecycle = (200, 213)
    raw = ws.config_dict(url, einvoicing=FAST_EINVOICING)
    raw["folders"][0]["send_by_einvoice"] = True
    running = await start(cfg(ws, url, raw))
    drop(ws, "first.pdf", number="R-213")
    await wait_for(lambda: any(e["code"] == 213 for e in events(_logs, "einvoice_status_changed")),
                   timeout_s=LONG, what="the platform's rejection")
    (first_id,) = emulator.invoices_of(LOGIN).values()
    emulator.lifecycle = (200, 201, 202)
    drop(ws, "corrected.pdf", number="R-213", net_cents=10100)  # same number, new bytes
    await wait_for(lambda: len(events(_logs, "einvoice_submitted")) == 2, timeout_s=LONG,
                   what="the correction sent")
    (correction,) = events(_logs, "invoice_correction")
    assert correction["corrects"] == first_id and correction["number"] == "R-213"
    assert correction["path"] == ws.inbox / "corrected.pdf"
    assert names(ws.done) >= {"first.pdf", "corrected.pdf"} and not events(_logs, "file_failed")
    # Before a rejection, the same number is a re-exported invoice, as ever.
    drop(ws, "again.pdf", number="R-213", net_cents=10200)
    await wait_for(lambda: "again.pdf" in names(ws.failed), timeout_s=LONG, what="the refusal")
    assert sidecar(ws, "again.pdf")["reason"] == "duplicate_number"
    assert await running.stop() == 0
