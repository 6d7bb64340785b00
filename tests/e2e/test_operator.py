"""The operator's commands as a person runs them: the recommended credentials, the
default configuration path, the log options, a configuration error for journald."""

from __future__ import annotations

import json

from helpers import ENV, Workspace, json_lines, run_cli, to_toml


def with_credentials(ws: Workspace, url: str) -> dict:
    """The README's recommended setup: the key comes from systemd's credentials."""
    raw = ws.config_dict(url)
    del raw["qonto"]["secret_key_env"]
    raw["qonto"]["secret_key_credential"] = "qonto-secret-key"
    return raw


async def test_commands_that_never_talk_to_qonto_read_no_secret(ws: Workspace, qonto):
    emulator, url = qonto
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(ws.config_dict(url)), encoding="utf-8")
    ws.invoice("a.pdf")
    code, _, err = await run_cli("run", "--once", "--config", str(toml))
    assert code == 0, err
    toml.write_text(to_toml(with_credentials(ws, url)), encoding="utf-8")
    no_secret = {"QONTO_SECRET_KEY": "", "CREDENTIALS_DIRECTORY": ""}  # a shell, not the unit
    for argv in (
        ["status"], ["status", "--json"], ["lookup", str(ws.done / "a.pdf")],
        ["lookup", "--json", str(ws.done / "a.pdf")], ["retry", "--all"],
        ["retry", "--einvoice", "--all"], ["send-einvoice", str(ws.done / "a.pdf")],
    ):
        code, out, err = await run_cli(*argv, "--config", str(toml), env=no_secret)
        assert "CREDENTIALS_DIRECTORY" not in err, (argv, err)
        assert code in (0, 1), (argv, code, err)
    code, out, _ = await run_cli("lookup", "--json", "--config", str(toml),
                                 str(ws.done / "a.pdf"), env=no_secret)
    assert json.loads(out)["state"] == "done"
    # check-config checks the secret itself: there, it says what is missing.
    code, _, err = await run_cli("check-config", "--config", str(toml), env=no_secret)
    assert code == 78 and "CREDENTIALS_DIRECTORY" in err


async def test_the_configuration_path_defaults_to_the_environment(ws: Workspace, qonto):
    _, url = qonto
    toml = ws.write_toml(url)
    code, out, err = await run_cli("status", "--json",
                                   env={"QONTO_INVOICE_DAEMON_CONFIG": str(toml)})
    assert code == 0, err
    assert json.loads(out)["database"] == str(ws.db)
    code, _, err = await run_cli("status", env={"QONTO_INVOICE_DAEMON_CONFIG": ""})
    assert code == 78 and "/etc/qonto-invoice-daemon/config.toml" in err


async def test_run_takes_the_log_level_and_format_from_its_command_line(ws: Workspace, qonto):
    _, url = qonto
    ws.invoice("a.pdf")
    toml = ws.write_toml(url, log={"format": "console", "level": "warning"})
    code, out, err = await run_cli("run", "--once", "--config", str(toml),
                                   "--log-level", "debug", "--log-format", "json")
    assert code == 0, err
    events = {e["event"] for e in json_lines(out)}
    assert {"daemon_started", "file_parsing", "file_imported"} <= events  # debug and info


async def test_a_configuration_error_at_start_is_also_a_json_line(ws: Workspace):
    toml = ws.root / "config.toml"
    toml.write_text("[qonto]\nlogin = 1\n", encoding="utf-8")
    code, out, err = await run_cli("run", "--config", str(toml), env=ENV)
    assert code == 78 and "configuration error" in err
    (line,) = json_lines(out)
    assert line["event"] == "config_error" and line["level"] == "critical"
    assert "qonto.login" in line["error"] and line["hint"]


async def test_check_config_lists_every_problem_at_once_unknown_keys_first(ws: Workspace):
    raw = ws.config_dict("http://127.0.0.1:9", upload={"concurrency": "four",
                                                       "timeout_seconds": -1},
                         watch={"settle_secnds": 1})
    del raw["qonto"]["secret_key_env"]
    raw["qonto"]["secret_key_credentail"] = "qonto-secret-key"  # misspelt
    raw["folders"].append({"inbox": str(ws.root / "two"), "done": 3})
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    code, out, err = await run_cli("check-config", "--config", str(toml), env=ENV)
    assert code == 78 and not out.strip().startswith("{")  # no log lines
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    text = "\n".join(problems)
    assert "unknown key qonto.secret_key_credentail" in problems[0]  # not "missing secret"
    for expected in ("upload.concurrency must be an integer", "upload.timeout_seconds must be",
                     "unknown key watch.settle_secnds", "folders[1]"):
        assert expected in text, (expected, text)


async def test_check_config_sees_an_inbox_the_daemon_could_not_empty(ws: Workspace):
    import os

    if os.geteuid() == 0:
        import pytest

        pytest.skip("root may write anywhere; --user covers it (test below)")
    ws.inbox.chmod(0o555)
    try:
        code, _, err = await run_cli("check-config", "--config", str(ws.write_toml("http://x")))
    finally:
        ws.inbox.chmod(0o755)
    assert code == 78 and "not writable" in err


async def test_check_config_as_the_service_user(ws: Workspace):
    import os
    import pwd

    import pytest

    if os.geteuid() != 0:
        pytest.skip("--user needs root")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody here")
    toml = ws.write_toml("http://127.0.0.1:9")
    os.chmod(ws.root, 0o755)
    code, out, err = await run_cli("check-config", "--config", str(toml), env=ENV)
    assert code == 0 and "--user" in out  # root passes everything, and is told so
    code, out, err = await run_cli("check-config", "--config", str(toml), "--user", "nobody",
                                   env=ENV)
    assert code == 78, (out, err)
    assert "(as nobody)" in err and "inbox" in err
    assert nobody.pw_uid != 0


async def test_status_check_speaks_the_monitoring_plugin_convention(ws: Workspace, qonto):
    from helpers import daemon, finish, seen, wait_for

    emulator, url = qonto
    toml = ws.write_toml(url)
    code, out, _ = await run_cli("status", "--check", "--config", str(toml))
    assert code == 2 and out.startswith("CRITICAL: ") and len(out.splitlines()) == 1
    log = ws.root / "daemon.log"
    proc = await daemon(toml, log)
    try:
        await wait_for(lambda: seen(log, "daemon_started"), what="the start", timeout_s=60)
        code, out, _ = await run_cli("status", "--check", "--config", str(toml))
        assert code == 0 and out.startswith("OK: running")
        (ws.inbox / "stuck.pdf").write_bytes(b"%PDF-1.7 never finished")  # waits for its writer
        code, out, _ = await run_cli("status", "--check", "--max-age", "0", "--config",
                                     str(toml))
        assert code == 1 and out.startswith("WARNING: ") and "stuck.pdf" in out
        emulator.faults.unauthorized = True
        ws.invoice("a.pdf")
        await wait_for(lambda: seen(log, "org_paused"), what="a pause", timeout_s=60)
        code, out, _ = await run_cli("status", "--check", "--config", str(toml))
        assert code == 1 and "paused" in out
    finally:
        proc.terminate()
        await finish(proc)
    (ws.root / "bad.toml").write_text("[qonto\n", encoding="utf-8")
    code, out, _ = await run_cli("status", "--check", "--config", str(ws.root / "bad.toml"))
    assert code == 3 and out.startswith("UNKNOWN: ")


async def test_status_counts_files_as_ls_sees_them(ws: Workspace, qonto):
    _, url = qonto
    first = ws.invoice("a.pdf")
    data = first.read_bytes()
    for copy in ("a (1).pdf", "a (2).pdf"):
        (ws.inbox / copy).write_bytes(data)
    (ws.inbox / "bad.pdf").write_text("not a pdf")
    toml = ws.write_toml(url)
    assert (await run_cli("run", "--once", "--config", str(toml)))[0] == 1
    code, out, _ = await run_cli("status", "--json", "--config", str(toml))
    (folder,) = json.loads(out)["folders"]
    assert (folder["done"], folder["imported_invoices"], folder["failed"]) == (3, 1, 1)


async def test_status_piped_into_head_ends_quietly(ws: Workspace, qonto):
    import asyncio
    import os
    import sys

    _, url = qonto
    toml = ws.write_toml(url)
    proc = await asyncio.create_subprocess_shell(
        # The reader is gone before the first line is written.
        f"'{sys.executable}' -m daemon status --config '{toml}' | head -c 0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err


async def test_a_wrong_base_url_is_one_error_and_run_once_gives_up(ws: Workspace):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws.invoice("a.pdf")
    toml = ws.write_toml(f"http://127.0.0.1:{port}", log={"unreachable_alert_seconds": 1.0})
    code, out, err = await run_cli("run", "--once", "--config", str(toml))
    assert code == 1, err
    lines = json_lines(out)
    (alert,) = [e for e in lines if e["event"] == "qonto_unreachable"]
    assert alert["level"] == "error" and "base_url" in alert["hint"] and alert["last_error"]
    assert str(port) in alert["hint"]
    assert (ws.inbox / "a.pdf").exists()  # left for the next run


async def test_a_dry_run_says_what_would_happen_and_does_none_of_it(ws: Workspace, qonto):
    import hashlib

    emulator, url = qonto
    toml = ws.write_toml(url, watch={"settle_seconds": 0.2})
    ws.invoice("old.pdf", "OLD-1")
    assert (await run_cli("run", "--once", "--config", str(toml)))[0] == 0
    ws.invoice("new.pdf", "NEW-1")
    ws.invoice("copy-1.pdf", "NEW-1")
    (ws.inbox / "copy-1.pdf").write_bytes((ws.inbox / "new.pdf").read_bytes())
    (ws.inbox / "again.pdf").write_bytes((ws.done / "old.pdf").read_bytes())
    (ws.inbox / "notes.pdf").write_text("not an invoice")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ws.inbox.iterdir()
              if p.is_file()}
    journal_before = ws.db.read_bytes()
    requests = emulator.requests
    code, out, err = await run_cli("run", "--dry-run", "--json", "--config", str(toml),
                                   env={"QONTO_SECRET_KEY": ""})  # no secret needed
    assert code == 1, err  # one file would fail
    said = {line["path"].rsplit("/", 1)[1]: line for line in json_lines(out)}
    assert said["new.pdf"]["would"] == "send" or said["copy-1.pdf"]["would"] == "send"
    assert {said["new.pdf"]["would"], said["copy-1.pdf"]["would"]} == {"send", "duplicate"}
    assert said["again.pdf"]["would"] == "duplicate" and said["again.pdf"]["invoice_id"]
    assert said["notes.pdf"]["would"] == "fail" and said["notes.pdf"]["reason"]
    # Nothing was sent, moved or written.
    assert emulator.requests == requests and ws.db.read_bytes() == journal_before
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ws.inbox.iterdir()
            if p.is_file()} == before
    assert not ws.failed.exists()
