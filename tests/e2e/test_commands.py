"""Commands for people: status, retry, check-config, while the daemon runs or not."""

from __future__ import annotations

import json
import signal

from helpers import (
    ENV,
    LOGIN,
    Workspace,
    daemon,
    events,
    finish,
    names,
    run_cli,
    seen,
    to_toml,
    wait_for,
)


async def status(toml) -> dict:
    code, out, err = await run_cli("status", "--config", str(toml), "--json")
    assert code == 0, err
    return json.loads(out)


async def test_status_while_running_and_after(ws: Workspace, qonto):
    emulator, url = qonto
    toml = ws.write_toml(url)
    log = ws.root / "daemon.log"
    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: seen(log, "daemon_started"), what="daemon_started")
        ws.invoice("a.pdf")
        ws.invoice("b.pdf")
        await wait_for(lambda: names(ws.done) == {"a.pdf", "b.pdf"}, what="two files done")
        report = await status(toml)
        assert report["running"] is True and report["pid"] == proc.pid
        (folder,) = report["folders"]
        assert folder["inbox"] == str(ws.inbox) and folder["org"] == LOGIN
        assert (folder["done"], folder["failed"], folder["waiting"]) == (2, 0, 0)
        (org,) = report["organizations"]
        assert org["org"] == LOGIN and org["paused"] is False and org["last_success_at"]
        emulator.faults.unauthorized = True
        ws.invoice("c.pdf")
        await wait_for(lambda: seen(log, "org_paused"), what="the organization to pause")
        report = await status(toml)
        (org,) = report["organizations"]
        assert org["paused"] is True and "secret key" in org["paused_reason"]
        assert "401" in org["last_error"]
        assert report["folders"][0]["waiting"] == 1
        assert report["folders"][0]["oldest_waiting"].endswith("c.pdf")
        assert report["folders"][0]["oldest_waiting_why"] in ("queued", "sending")
        code, text, _ = await run_cli("status", "--config", str(toml))
        assert code == 0 and "paused" in text and f"pid {proc.pid}" in text
        proc.send_signal(signal.SIGTERM)
        assert await finish(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (await status(toml))["running"] is False


async def test_retry_moves_failed_files_back(ws: Workspace, qonto):
    _, url = qonto
    (ws.inbox / "bad.pdf").write_text("not a pdf")
    toml = ws.write_toml(url)
    code, _, _ = await run_cli("run", "--config", str(toml), "--once")
    assert code == 1 and names(ws.failed) == {"bad.pdf", "bad.pdf.error.json"}
    code, out, _ = await run_cli("retry", "--config", str(toml), "--all")
    assert code == 0 and "bad.pdf" in out
    assert names(ws.inbox) == {"bad.pdf"} and not names(ws.failed)
    code, _, err = await run_cli("retry", "--config", str(toml), str(ws.root / "elsewhere.pdf"))
    assert code == 1 and "not in a failed/ folder" in err


async def test_check_config_good_and_bad(ws: Workspace, qonto):
    _, url = qonto
    toml = ws.write_toml(url)
    code, out, err = await run_cli("check-config", "--config", str(toml), "--online")
    assert code == 0 and "configuration OK" in out, err
    (ws.root / "blocker").write_text("a file where a folder should be")
    raw = ws.config_dict(url)
    raw["folders"][0]["inbox"] = str(ws.root / "missing-inbox")
    raw["folders"][0]["done"] = str(ws.root / "blocker" / "done")
    bad = ws.root / "bad.toml"
    bad.write_text(to_toml(raw), encoding="utf-8")
    code, _, err = await run_cli("check-config", "--config", str(bad))
    assert code == 78
    assert "folders[0].inbox" in err and "folders[0].done" in err  # every problem listed
    code, _, err = await run_cli("check-config", "--config", str(toml), "--online",
                                 env={"QONTO_SECRET_KEY": "a-wrong-key"})
    assert code == 78 and LOGIN in err and "401" in err and "a-wrong-key" not in err
    assert ENV  # the right key stayed in the test's environment


async def test_a_heartbeat_says_how_things_stand(ws, qonto, start, _logs):
    _, url = qonto
    ws.invoice("a.pdf")
    running = await start(ws.config(url, log={"heartbeat_seconds": 0.5}))
    await wait_for(lambda: (ws.done / "a.pdf").exists(), what="a.pdf in done/")
    # Beats come every half second: one of them counts the import.
    await wait_for(lambda: any(b["done"] == 1 for b in events(_logs, "heartbeat")),
                   timeout_s=20, what="a heartbeat that counts a.pdf")
    beat = next(b for b in events(_logs, "heartbeat") if b["done"] == 1)
    assert beat["failed"] == 0 and beat["waiting"] == 0
    assert beat["in_flight"] == 0 and beat["paused"] == [] and "oldest_waiting_s" in beat
    assert await running.stop() == 0
