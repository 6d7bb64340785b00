"""The Factur-X policy and re-exported invoices, end to end: where each file ends, what is said."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from helpers import LOGIN, Workspace, events, journal_row, names, run_cli, sha256_of

from daemon.commands.demo import tiny_png
from daemon.testing.samples import facturx_pdf, facturx_xml, plain_pdf

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def invalid_facturx(path: Path) -> Path:
    """A Factur-X PDF whose XML breaks its XSD (an element the schema does not know)."""
    from facturx import generate_from_file

    xml = facturx_xml("BAD-XSD", 100).replace(
        b"<ram:TypeCode>380</ram:TypeCode>", b"<ram:TypeCode>380</ram:TypeCode><ram:Oops/>"
    )
    src = path.with_name(".src.pdf")
    src.write_bytes(plain_pdf(["bad xsd"]))
    generate_from_file(str(src), xml, output_pdf_file=str(path), check_xsd=False)
    src.unlink()
    return path


def mixed_inbox(ws: Workspace) -> dict[str, str | None]:
    """One file of each kind; the reason each gets under "require" (None: valid)."""
    ws.invoice("valid.pdf", "F-VALID")
    (ws.inbox / "plain.pdf").write_bytes(plain_pdf(["a letter, not an invoice"]))
    invalid_facturx(ws.inbox / "invalid.pdf")
    (ws.inbox / "scan.png").write_bytes(tiny_png())
    expected: dict[str, str | None] = {
        "valid.pdf": None, "plain.pdf": "not_facturx", "invalid.pdf": "facturx_invalid",
        "scan.png": "not_facturx",
    }
    if (CORPUS / "MANIFEST.tsv").exists():
        shutil.copyfile(CORPUS / "ZUGFeRD_1p0_BASIC_Einfach.pdf", ws.inbox / "zugferd1.pdf")
        shutil.copyfile(CORPUS / "XRECHNUNG_Einfach.pdf", ws.inbox / "xrechnung.pdf")
        expected["zugferd1.pdf"] = "not_facturx_zugferd1"
        expected["xrechnung.pdf"] = "not_facturx_xrechnung"
    return expected


def config(ws: Workspace, url: str, policy: str, **validation: object):
    return ws.config(url, validation={"facturx": policy, "duplicate_number": "off",
                                      **validation}, upload={"linger_seconds": 0.3})


async def test_require_fails_everything_but_valid_facturx_and_sends_nothing_else(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    expected = mixed_inbox(ws)
    assert await asyncio.wait_for((await start(config(ws, url, "require"), once=True)).task,
                                  60) == 1
    assert names(ws.done) == {"valid.pdf"}
    assert list(emulator.invoices_of(LOGIN)) == [sha256_of(ws.done / "valid.pdf")]
    for name, reason in expected.items():
        if reason is None:
            continue
        report = json.loads((ws.failed / f"{name}.error.json").read_text())
        assert report["reason"] == reason, name
    invalid = json.loads((ws.failed / "invalid.pdf.error.json").read_text())
    assert "line " in invalid["detail"] and "Oops" in invalid["detail"]
    row = await journal_row(ws, sha256_of(ws.failed / "invalid.pdf"))
    assert row.state == "failed" and row.facts["number"] == "BAD-XSD"
    queued = {Path(e["path"]).name: e for e in events(_logs, "file_queued")}
    assert queued["valid.pdf"]["facturx"] == "factur-x/en16931"
    assert queued["valid.pdf"]["number"] == "F-VALID"


async def test_warn_imports_everything_and_says_why(ws, qonto, start, _logs):
    emulator, url = qonto
    expected = mixed_inbox(ws)
    assert await asyncio.wait_for((await start(config(ws, url, "warn"), once=True)).task,
                                  60) == 0
    assert names(ws.done) == set(expected)
    assert len(emulator.invoices_of(LOGIN)) == len(expected)
    warned = {Path(e["path"]).name: e["reason"] for e in events(_logs, "facturx_warning")}
    assert warned == {name: reason for name, reason in expected.items() if reason}


async def test_off_parses_nothing(ws, qonto, start, _logs):
    emulator, url = qonto
    expected = mixed_inbox(ws)
    running = await start(config(ws, url, "off"), once=True)
    assert await asyncio.wait_for(running.task, 60) == 0
    assert names(ws.done) == set(expected) and not events(_logs, "facturx_warning")
    assert all(e.get("facturx") is None for e in events(_logs, "file_queued"))
    row = await journal_row(ws, sha256_of(ws.done / "valid.pdf"))
    assert row.facts is None


async def test_the_policy_can_differ_per_folder(ws, qonto, start):
    emulator, url = qonto
    strict = ws.root / "strict"
    strict.mkdir()
    (strict / "plain.pdf").write_bytes(plain_pdf(["strict folder"]))
    (ws.inbox / "plain.pdf").write_bytes(plain_pdf(["lenient folder"]))
    raw = ws.config_dict(url, validation={"facturx": "warn"})
    raw["folders"].append({"inbox": str(strict), "done": str(strict / "done"),
                           "failed": str(strict / "failed"), "facturx": "require"})
    from helpers import ENV

    from daemon import config as config_mod

    cfg = config_mod.from_dict(raw, env=ENV, base_dir=ws.root)
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 60) == 1
    assert names(ws.done) == {"plain.pdf"} and names(strict / "failed") == {
        "plain.pdf", "plain.pdf.error.json"}


async def test_lookup_json_shows_what_the_xml_said(ws, qonto):
    _, url = qonto
    ws.invoice("F-2026-0042.pdf", "F-2026-0042", 48211)
    toml = ws.write_toml(url)
    code, _, err = await run_cli("run", "--config", str(toml), "--once")
    assert code == 0, err
    code, out, _ = await run_cli("lookup", "--config", str(toml), "--json",
                                 str(ws.done / "F-2026-0042.pdf"))
    row = json.loads(out)
    assert row["state"] == "done" and row["facturx"] == {
        "flavor": "factur-x", "profile": "en16931", "number": "F-2026-0042",
        "issue_date": "2026-11-24", "seller": "ACME SAS", "buyer": "Client SARL",
        "grand_total": "578.53", "currency": "EUR",
    }


@pytest.mark.parametrize("policy", ["fail", "warn", "off"])
async def test_a_re_exported_invoice_under_each_duplicate_number_setting(
    ws, qonto, start, _logs, policy
):
    """The ERP exports invoice F-7 again: new bytes (another date on the PDF), same number."""
    emulator, url = qonto
    cfg = ws.config(url, validation={"duplicate_number": policy})
    ws.invoice("F-7.pdf", "F-7")
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 60) == 0
    first_id = emulator.invoices_of(LOGIN)[sha256_of(ws.done / "F-7.pdf")]
    again = ws.inbox / "F-7 (export 2).pdf"
    facturx_pdf(again, "F-7", date="20261125")
    assert sha256_of(again) != sha256_of(ws.done / "F-7.pdf")
    code = await asyncio.wait_for((await start(cfg, once=True)).task, 60)
    if policy == "fail":
        assert code == 1 and len(emulator.invoices_of(LOGIN)) == 1
        report = json.loads((ws.failed / "F-7 (export 2).pdf.error.json").read_text())
        assert report["reason"] == "duplicate_number"
        assert first_id in report["detail"] and "F-7.pdf" in report["detail"]
    else:
        assert code == 0 and len(emulator.invoices_of(LOGIN)) == 2
        assert "F-7 (export 2).pdf" in names(ws.done)
        assert bool(events(_logs, "duplicate_number")) == (policy == "warn")


async def test_a_credit_note_may_share_its_number_with_an_invoice(ws, qonto, start):
    emulator, url = qonto
    ws.invoice("F-9.pdf", "F-9")
    facturx_pdf(ws.inbox / "credit F-9.pdf", "F-9", type_code="381")
    assert await asyncio.wait_for((await start(ws.config(url), once=True)).task, 60) == 0
    assert len(emulator.invoices_of(LOGIN)) == 2


async def test_a_queued_file_rewritten_before_it_was_sent_holds_no_number(
    ws, qonto, start, _logs
):
    """Paused by a 401, F-7 waits; the ERP exports it again under the same name."""
    emulator, url = qonto
    emulator.faults.unauthorized = True
    running = await start(ws.config(url))
    path = ws.invoice("F-7.pdf", "F-7")
    from helpers import wait_for

    await wait_for(lambda: events(_logs, "org_paused"), what="the organization to pause")
    again = facturx_pdf(ws.root / "again.pdf", "F-7", date="20261125")
    again.replace(path)
    second = sha256_of(path)
    emulator.faults.unauthorized = False
    await wait_for(lambda: second in emulator.invoices_of(LOGIN), timeout_s=30,
                   what="the re-export imported")
    assert not (ws.failed / "F-7.pdf.error.json").exists()
    assert await running.stop() == 0
