"""The dry run, in this process: each kind of file gets the verdict `run` would give."""

from __future__ import annotations

import json

from helpers import LOGIN

from daemon.commands.demo import tiny_png
from daemon.commands.dryrun import dry_run


async def test_each_file_gets_its_verdict_and_nothing_changes(ws, qonto, start, capsys):
    import asyncio

    emulator, url = qonto
    cfg = ws.config(url, watch={"settle_seconds": 0.1},
                    validation={"facturx": "require"})
    ws.invoice("known.pdf", "K-1")
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    (ws.inbox / "known-again.pdf").write_bytes((ws.done / "known.pdf").read_bytes())
    ws.invoice("new.pdf", "N-1")
    (ws.inbox / "twin.pdf").write_bytes((ws.inbox / "new.pdf").read_bytes())
    (ws.inbox / "scan.png").write_bytes(tiny_png())  # not Factur-X, under "require"
    whole = (ws.inbox / "new.pdf").read_bytes()
    (ws.inbox / "cut.pdf").write_bytes(whole[: len(whole) // 2])
    (ws.inbox / "empty.pdf").write_bytes(b"")
    requests = emulator.requests
    capsys.readouterr()
    assert await dry_run(cfg, as_json=True) == 1
    said = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)
            for line in capsys.readouterr().out.splitlines()}
    assert said["known-again.pdf"]["would"] == "duplicate"
    assert said["known-again.pdf"]["invoice_id"] in emulator.invoices_of(LOGIN).values()
    assert {said["new.pdf"]["would"], said["twin.pdf"]["would"]} == {"send", "duplicate"}
    assert said["new.pdf"]["organization"] == LOGIN
    assert said["scan.png"]["would"] == "fail" and said["scan.png"]["reason"] == "not_facturx"
    assert said["cut.pdf"]["would"] == "wait"
    assert said["empty.pdf"]["would"] == "fail" and said["empty.pdf"]["reason"] == "empty"
    assert emulator.requests == requests and (ws.inbox / "new.pdf").exists()
    # The plain form: one line a file, tab-separated.
    assert await dry_run(cfg, as_json=False) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith("scan.png\tfail\tnot_facturx\t" + said["scan.png"]["detail"])
               for line in lines)


async def test_a_dry_run_needs_no_journal(ws, qonto, capsys):
    _, url = qonto
    ws.invoice("a.pdf")
    assert await dry_run(ws.config(url, watch={"settle_seconds": 0.0}), as_json=True) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["would"] == "send" and not ws.db.exists()


async def test_a_dry_run_checks_the_business_rules_as_run_would(ws, qonto, capsys):
    from daemon.testing.samples import facturx_pdf, totals_wrong_xml

    _, url = qonto
    ws.invoice("good.pdf", "D-1")
    facturx_pdf(ws.root / "bad.pdf", "D-2", xml=totals_wrong_xml("D-2")).rename(
        ws.inbox / "bad.pdf"
    )
    cfg = ws.config(url, watch={"settle_seconds": 0.0}, validation={"rules": "require"})
    assert await dry_run(cfg, as_json=True) == 1
    said = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)
            for line in capsys.readouterr().out.splitlines()}
    assert said["good.pdf"]["would"] == "send" and said["good.pdf"]["rules"] == []
    assert said["bad.pdf"]["would"] == "fail" and said["bad.pdf"]["reason"] == "rules_failed"
    assert "BR-CO-10" in said["bad.pdf"]["rules"]
    warned = ws.config(url, watch={"settle_seconds": 0.0}, validation={"rules": "warn"})
    assert await dry_run(warned, as_json=True) == 0
    said = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)
            for line in capsys.readouterr().out.splitlines()}
    assert said["bad.pdf"]["would"] == "send"
    assert said["bad.pdf"]["warning"].startswith("rules_warning: ")
