"""The command line as users and scripts run it: real subprocesses, the emulator on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from helpers import ENV, LOGIN, json_lines, run_cli, sha256_of, wait_for


async def test_run_once_then_lookup(ws, qonto):
    emulator, url = qonto
    good = ws.invoice("good.pdf")
    sha = sha256_of(good)
    (ws.inbox / "bad.pdf").write_text("not a pdf")
    toml = ws.write_toml(url)
    code, out, _ = await run_cli("run", "--config", str(toml), "--once")
    assert code == 1  # one file failed
    logs = json_lines(out)  # JSON lines on stdout when it is not a terminal
    assert {e["event"] for e in logs} >= {"daemon_started", "file_imported", "file_failed"}
    invoice_id = emulator.invoices_of(LOGIN)[sha]

    code, out, _ = await run_cli(
        "lookup", "--config", str(toml), "--json",
        str(ws.done / "good.pdf"), str(ws.failed / "bad.pdf"),
    )
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["path"] == str(ws.done / "good.pdf") and first["sha256"] == sha
    assert first["invoice_id"] == invoice_id and first["state"] == "done"
    assert second["invoice_id"] is None and second["state"] == "failed"

    stranger = ws.root / "stranger.pdf"
    stranger.write_bytes(b"%PDF-1.7 never seen")
    code, out, _ = await run_cli("lookup", "--config", str(toml), str(stranger))
    assert code == 0
    assert out.split("\t")[2] == "unknown"


async def test_run_once_exits_0_when_everything_is_done(ws, qonto):
    _, url = qonto
    ws.invoice("a.pdf")
    code, _, _ = await run_cli("run", "--config", str(ws.write_toml(url)), "--once")
    assert code == 0


async def test_sigterm_exits_0(ws, qonto):
    emulator, url = qonto
    toml = ws.write_toml(url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "run", "--config", str(toml),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV},
    )
    try:
        ws.invoice("a.pdf")
        await wait_for(lambda: (ws.done / "a.pdf").exists(), what="a.pdf in done/")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert json_lines(out.decode())[-1]["event"] == "daemon_stopped"


async def test_demo_runs(tmp_path: Path):
    code, out, err = await run_cli("demo", timeout_s=120)
    assert code == 0, err
    assert "invoice_id" in out and "unsupported_type" in out


async def test_every_line_on_stdout_is_json_even_when_libraries_complain(ws, qonto):
    """pypdf warns about a PDF with a wrong startxref: that must not break the JSON log."""
    emulator, url = qonto
    path = ws.invoice("odd.pdf", "ODD")
    data = path.read_bytes()
    cut = data.rindex(b"startxref")
    path.write_bytes(data[:cut] + b"startxref\n123\n%%EOF\n")  # readers recover; pypdf warns
    code, out, err = await run_cli(
        "run", "--config", str(ws.write_toml(url, log={"level": "debug"})), "--once"
    )
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines and all(json.loads(line) for line in lines)
    messages = [json.loads(line) for line in lines]
    assert any(m["event"] == "library_message" and m["logger"].startswith("pypdf")
               for m in messages)
    assert sha256_of(ws.done / "odd.pdf") in emulator.invoices_of(LOGIN)


async def test_lookup_prints_valid_utf8_for_any_name(ws, qonto):
    _, url = qonto
    raw = os.fsencode(ws.inbox) + b"/facture-\xff.pdf"
    await asyncio.to_thread(Path(os.fsdecode(raw)).write_bytes, b"%PDF-1.7 not UTF-8\n%%EOF\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "lookup", "--config", str(ws.write_toml(url)), "--json",
        os.fsdecode(raw), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    row = json.loads(out.decode("utf-8"))  # strict: valid UTF-8
    assert row["path"].endswith("facture-\\xff.pdf") and row["state"] == "unknown"


async def test_the_emulator_s_command_line_serves_oauth_clients():
    import asyncio
    import os
    import sys
    import urllib.parse
    import urllib.request

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.emulator", "--port", "0", "--login", "acme",
        "--secret", "s", "--oauth-client", "acme:cid:csecret", "--access-lifetime-s", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        lines = [(await asyncio.wait_for(proc.stderr.readline(), 30)).decode() for _ in range(2)]
        refresh = lines[1].rsplit(" ", 1)[1].strip()
        form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh,
                                       "client_id": "cid", "client_secret": "csecret"}).encode()

        def token() -> dict:
            with urllib.request.urlopen(f"{url}/oauth2/token", data=form, timeout=10) as r:
                return json.loads(r.read())

        answer = await asyncio.to_thread(token)
        assert answer["access_token"] and answer["refresh_token"] != refresh
        assert answer["expires_in"] == 5
    finally:
        proc.terminate()
        await proc.wait()
