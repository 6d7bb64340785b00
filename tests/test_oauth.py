"""OAuth with rotating refresh tokens, against the emulator's token endpoint."""

from __future__ import annotations

import asyncio
import signal

import pytest
from helpers import (
    ENV,
    LOGIN,
    Workspace,
    daemon,
    events,
    finish,
    log_events,
    names,
    run_cli,
    seen,
    to_toml,
    wait_for,
)

from daemon import config as config_mod
from daemon.errors import ConfigError
from daemon.journal import Journal


def oauth_config(ws: Workspace, url: str, refresh_token: str, **sections) -> dict:
    raw = ws.config_dict(url, **sections)
    raw["qonto"] = {
        "base_url": url, "login": LOGIN, "auth": "oauth", "client_id": "cid",
        "client_secret_env": "CLIENT_SECRET", "refresh_token_env": "REFRESH_TOKEN",
        "token_url": f"{url}/oauth2/token",
    }
    return raw


def env(refresh_token: str) -> dict[str, str]:
    return {**ENV, "CLIENT_SECRET": "cs3cret", "REFRESH_TOKEN": refresh_token}


def test_oauth_keys_are_checked(ws):
    raw = oauth_config(ws, "http://127.0.0.1:1", "rt")
    cfg = config_mod.from_dict(raw, env=env("rt-1"), base_dir=ws.root)
    org = cfg.folders[0].org
    assert org.oauth is not None and org.secret is None and "rt-1" not in repr(cfg)
    assert set(cfg.secret_values()) >= {"cs3cret", "rt-1"}
    raw["qonto"]["secret_key_env"] = "QONTO_SECRET_KEY"
    with pytest.raises(ConfigError, match="no secret_key"):
        config_mod.from_dict(raw, env=env("rt-1"), base_dir=ws.root)
    plain = ws.config_dict("http://127.0.0.1:1")
    plain["qonto"]["client_id"] = "cid"
    with pytest.raises(ConfigError, match='needs auth = "oauth"'):
        config_mod.from_dict(plain, env=ENV, base_dir=ws.root)


async def test_tokens_are_refreshed_before_expiry_and_after_a_401(ws, qonto, start, _logs):
    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    emulator.access_lifetime_s = 1.0
    cfg = config_mod.from_dict(oauth_config(ws, url, first), env=env(first), base_dir=ws.root)
    running = await start(cfg)
    ws.invoice("a.pdf")
    await wait_for(lambda: "a.pdf" in names(ws.done), what="a.pdf imported")
    assert emulator.refreshes >= 1
    refreshed = emulator.refreshes
    await wait_for(lambda: emulator.refreshes > refreshed, what="a refresh before expiry")
    ws.invoice("b.pdf")
    await wait_for(lambda: "b.pdf" in names(ws.done), what="b.pdf imported")
    assert 401 not in emulator.statuses  # refreshed before use, never after a refusal
    assert await running.stop() == 0


async def test_an_idle_daemon_keeps_its_oauth_tokens_fresh(ws, qonto, start, _logs):
    """A folder quiet for 90 days must not let the refresh-token chain lapse."""
    emulator, url = qonto
    emulator.refresh_grace_s = 0.0
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    emulator.access_lifetime_s = 1.0
    cfg = config_mod.from_dict(oauth_config(ws, url, first), env=env(first), base_dir=ws.root)
    running = await start(cfg)
    await wait_for(lambda: emulator.refreshes >= 3, what="refreshes with no file at all")
    assert emulator.requests == 0  # no upload asked for them
    assert first not in emulator.refresh_tokens  # rotated, and the newest kept
    assert await running.stop() == 0
    ws.invoice("a.pdf")  # a restart starts from the newest token, stored durably
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0


async def test_a_401_gets_one_fresh_token_before_any_pause(ws, qonto, start, _logs):
    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    cfg = config_mod.from_dict(oauth_config(ws, url, first), env=env(first), base_dir=ws.root)
    running = await start(cfg)
    ws.invoice("a.pdf")
    await wait_for(lambda: "a.pdf" in names(ws.done), what="a.pdf imported")
    emulator.revoke_access_tokens()  # Qonto no longer knows the access token: a 401
    ws.invoice("b.pdf")
    await wait_for(lambda: "b.pdf" in names(ws.done), what="b.pdf imported after a 401")
    assert emulator.statuses.get(401) == 1 and emulator.refreshes == 2
    assert not events(_logs, "org_paused")
    assert await running.stop() == 0


async def test_a_refused_refresh_token_pauses_the_organization(ws, qonto, start, _logs):
    emulator, url = qonto
    emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    cfg = config_mod.from_dict(oauth_config(ws, url, "rt-unknown"), env=env("rt-unknown"),
                               base_dir=ws.root)
    running = await start(cfg)
    ws.invoice("a.pdf")
    await wait_for(lambda: events(_logs, "org_paused"), what="org_paused")
    paused = events(_logs, "org_paused")[0]
    assert "refresh token" in paused["hint"] and "rt-unknown" not in str(paused)
    assert names(ws.inbox) == {"a.pdf"}
    assert await running.stop() == 0


async def test_a_sigkill_right_after_a_refresh_never_locks_the_daemon_out(ws, qonto):
    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(oauth_config(ws, url, first)), encoding="utf-8")
    log = ws.root / "daemon.log"
    import os

    os.environ.update(env(first))
    try:
        proc = await daemon(toml, log)
        ws.invoice("a.pdf")
        await wait_for(lambda: emulator.refreshes == 1, what="the first refresh")
        # The configured token is rotated out; if the kill comes before the new one
        # is stored, Qonto's 60 s grace (the emulator's too) lets it refresh once more.
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        proc = await daemon(toml, log)
        await wait_for(lambda: names(ws.done) == {"a.pdf"}, what="a.pdf imported")
        ws.invoice("b.pdf")
        await wait_for(lambda: "b.pdf" in names(ws.done), what="b.pdf imported")
        proc.send_signal(signal.SIGTERM)
        assert await finish(proc) == 0
    finally:
        for key in ("CLIENT_SECRET", "REFRESH_TOKEN"):
            os.environ.pop(key, None)
    assert not seen(log, "org_paused")
    text = log.read_text()
    for token in [first, *emulator.refresh_tokens, *emulator.bearer_tokens]:
        assert token not in text  # no token ever reaches a log line
    assert log_events(log)


async def test_check_config_online_with_oauth_stores_the_rotated_token(ws, qonto, start):
    emulator, url = qonto
    emulator.refresh_grace_s = 0.0  # a used token is dead at once: only the stored one works
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    raw = oauth_config(ws, url, first)
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    # No journal yet: a refresh would rotate the token with nowhere to keep the new one.
    code, out, err = await run_cli("check-config", "--config", str(toml), "--online",
                                   env=env(first))
    assert code == 0, err
    assert "OAuth not checked online" in out and emulator.refreshes == 0
    assert not ws.db.exists()  # check-config makes no journal
    cfg = config_mod.from_dict(raw, env=env(first), base_dir=ws.root)
    ws.invoice("first.pdf")
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    assert emulator.refreshes == 1
    code, out, err = await run_cli("check-config", "--config", str(toml), "--online",
                                   env=env(first))
    assert code == 0, err
    assert emulator.refreshes == 2  # rotated, and stored as `run` would
    # `run` starts from the token check-config stored, not a dead one.
    ws.invoice("a.pdf")
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    assert emulator.refreshes == 3


async def test_authorize_gets_the_first_refresh_token_through_qonto_s_consent(ws, qonto):
    import os
    import socket
    import stat
    import sys

    import aiohttp

    emulator, url = qonto
    emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    raw = oauth_config(ws, url, "unused")
    del raw["qonto"]["refresh_token_env"]
    token_file = ws.root / "refresh_token"  # not there yet: authorize makes it
    raw["qonto"]["refresh_token_file"] = str(token_file)
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "authorize", "--config", str(toml), "--org", LOGIN,
        "--port", str(port), "--write", str(token_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env("unused")},
    )
    try:
        assert b"Open this address" in await asyncio.wait_for(proc.stdout.readline(), 30)
        page = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert page.startswith(f"{url}/oauth2/auth?") and "offline_access" in page
        async with aiohttp.ClientSession() as browser, browser.get(page) as answer:
            assert "close this window" in await answer.text()  # Qonto sent us back
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert "stored in the journal" in out.decode()
    token = token_file.read_text().strip()
    assert token in emulator.refresh_tokens  # the live one
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert emulator.consents[0]["redirect_uri"] == f"http://127.0.0.1:{port}/callback"
    # The daemon starts from it.
    ws.invoice("a.pdf")
    code, _, err = await run_cli("run", "--once", "--config", str(toml), env=env("unused"))
    assert code == 0, err
    assert len(emulator.invoices_of(LOGIN)) == 1


async def test_authorize_in_process_refuses_what_it_must(ws, qonto, capsys):
    import socket

    import aiohttp

    from daemon.commands.authorize import authorize

    emulator, url = qonto
    emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    raw = oauth_config(ws, url, "unused")
    cfg = config_mod.from_dict(raw, env=env("unused"), base_dir=ws.root,
                               secrets=frozenset({"client_secret"}))
    assert await authorize(cfg, "nobody-0000", port=0, write=None, page=None) == 78
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    written = ws.root / "token"
    task = asyncio.create_task(authorize(cfg, LOGIN, port=port, write=written, page=None))
    out = ""
    while "http" not in out:
        await asyncio.sleep(0.02)
        out += capsys.readouterr().out
        assert not task.done(), task.result()
    page = next(line for line in out.splitlines() if line.startswith("http"))
    async with aiohttp.ClientSession() as browser:
        # A stranger's answer (wrong state) changes nothing...
        async with browser.get(f"http://127.0.0.1:{port}/callback?code=x&state=y") as answer:
            assert answer.status == 400
        async with browser.get(page) as answer:  # ...Qonto's does
            assert "close this window" in await answer.text()
    assert await asyncio.wait_for(task, 30) == 0
    assert written.read_text().strip() in emulator.refresh_tokens
    journal = await Journal.open(ws.db)
    try:
        stored = await journal.refresh_token(LOGIN)
    finally:
        await journal.close()
    assert stored is not None and stored[0] == written.read_text().strip()


@pytest.mark.parametrize("quirk", [
    {"expires_in": "3600s"}, {"expires_in": 0}, {"expires_in": -5}, {"expires_in": None},
    {"expires_in": "nan"},
])
async def test_a_token_lifetime_that_makes_no_sense_gets_a_safe_one(ws, qonto, start, _logs,
                                                                     quirk):
    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    emulator.token_quirks = quirk
    cfg = config_mod.from_dict(oauth_config(ws, url, first), env=env(first), base_dir=ws.root)
    running = await start(cfg)
    for i in range(3):
        ws.invoice(f"{i}.pdf")
        await wait_for(lambda i=i: f"{i}.pdf" in names(ws.done), what=f"{i}.pdf imported")
    assert emulator.refreshes == 1  # not one per request
    assert not events(_logs, "daemon_failed")
    assert await running.stop() == 0


async def test_an_access_token_that_cannot_go_in_a_header_is_refused_and_retried(
    ws, qonto, start, _logs
):
    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    emulator.token_quirks = {"access_token": "at-evil\r\nX-Injected: yes"}
    cfg = config_mod.from_dict(oauth_config(ws, url, first), env=env(first), base_dir=ws.root)
    running = await start(cfg)
    ws.invoice("a.pdf")
    await wait_for(lambda: events(_logs, "batch_retry"), what="a retry")
    assert "not a bearer token" in events(_logs, "batch_retry")[0]["error"]
    assert "X-Injected" not in str(_logs) and names(ws.inbox) == {"a.pdf"}
    emulator.token_quirks = {}  # the endpoint is mended
    await wait_for(lambda: "a.pdf" in names(ws.done), what="a.pdf imported")
    assert not events(_logs, "daemon_failed")
    assert await running.stop() == 0


async def test_the_refresh_token_kept_from_an_earlier_run_never_shows(ws, qonto, start, _logs):
    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    raw = oauth_config(ws, url, first)
    cfg = config_mod.from_dict(raw, env=env(first), base_dir=ws.root)
    ws.invoice("a.pdf")
    assert await asyncio.wait_for((await start(cfg, once=True)).task, 30) == 0
    (kept,) = emulator.refresh_tokens  # rotated: the journal holds this one now
    assert kept != first
    emulator.token_error_page = True  # a gateway quoting the request, token included
    _logs.clear()
    running = await start(cfg)
    ws.invoice("b.pdf")
    await wait_for(lambda: events(_logs, "batch_retry"), what="a retry")
    assert await running.stop() == 0
    assert "Bad gateway" in str(_logs) and kept not in str(_logs)
    toml = ws.root / "status.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")
    shown = ""
    for argv in (("status", "--json"), ("lookup", "--json")):
        extra = (str(ws.inbox / "b.pdf"),) if argv[0] == "lookup" else ()
        code, out, err = await run_cli(*argv, "--config", str(toml), *extra,
                                       env={"REFRESH_TOKEN": first, "CLIENT_SECRET": "cs3cret"})
        shown += out + err
    assert "Bad gateway" in shown and kept not in shown  # status shows the last error
    import sqlite3

    with sqlite3.connect(ws.db) as db:
        errors = db.execute("SELECT last_error FROM organizations").fetchall()
    db.close()
    assert errors and all(kept not in (e or "") for (e,) in errors)


async def test_a_hanging_token_endpoint_never_holds_the_other_organizations_up(
    ws, qonto, start, _logs
):
    """The token is fetched before a request takes one of the shared upload slots."""
    from helpers import OTHER_LOGIN

    emulator, url = qonto
    first = emulator.add_oauth_client(LOGIN, "cid", "cs3cret")
    emulator.token_hangs.add("cid")
    other_inbox = ws.root / "other"
    other_inbox.mkdir()
    raw = oauth_config(ws, url, first, upload={"concurrency": 1, "timeout_seconds": 600.0})
    raw["folders"].append({
        "inbox": str(other_inbox), "done": str(other_inbox / "done"),
        "failed": str(other_inbox / "failed"), "login": OTHER_LOGIN,
        "secret_key_env": "QONTO_SECRET_KEY_OTHER",
    })
    cfg = config_mod.from_dict(raw, env=env(first), base_dir=ws.root)
    running = await start(cfg)
    ws.invoice("stuck.pdf", "STUCK-1")
    await wait_for(
        lambda: any(e["path"].name == "stuck.pdf" for e in events(_logs, "file_queued")),
        what="the stuck file queued",
    )
    for i in range(3):
        ws.invoice(f"other-{i}.pdf", f"OTHER-{i}", folder=other_inbox)
    await wait_for(lambda: len(names(other_inbox / "done")) == 3, timeout_s=30,
                   what="the other organization's files, while the token hangs")
    assert names(ws.inbox) == {"stuck.pdf"}
    assert await running.stop() == 0


def test_two_organizations_may_not_share_a_refresh_token(ws):
    from helpers import OTHER_LOGIN

    raw = oauth_config(ws, "http://127.0.0.1:1", "rt")
    other = ws.root / "other"
    raw["folders"].append({
        "inbox": str(other), "done": str(other / "done"), "failed": str(other / "failed"),
        "login": OTHER_LOGIN, "auth": "oauth", "client_id": "cid",
        "client_secret_env": "CLIENT_SECRET", "refresh_token_env": "REFRESH_TOKEN_2",
    })
    shared = {**env("rt-1"), "REFRESH_TOKEN_2": "rt-1"}  # the same token, another name
    with pytest.raises(ConfigError, match="same OAuth refresh token"):
        config_mod.from_dict(raw, env=shared, base_dir=ws.root)
    own = {**env("rt-1"), "REFRESH_TOKEN_2": "rt-2"}
    assert len(config_mod.from_dict(raw, env=own, base_dir=ws.root).organizations) == 2


async def test_a_token_of_another_organization_imports_nothing(ws, qonto, start, _logs):
    """Configured as acme with a token made for another organization: checked with
    GET /v2/organization, the organization pauses and nothing is created anywhere."""
    from helpers import OTHER_LOGIN

    emulator, url = qonto
    foreign = emulator.add_oauth_client(OTHER_LOGIN, "cid", "cs3cret")
    cfg = config_mod.from_dict(oauth_config(ws, url, foreign), env=env(foreign),
                               base_dir=ws.root)
    running = await start(cfg)
    ws.invoice("a.pdf")
    await wait_for(lambda: events(_logs, "org_paused"), what="the pause")
    (paused,) = events(_logs, "org_paused")[:1]
    assert OTHER_LOGIN in paused["error"] and "authorize" in paused["hint"]
    assert not emulator.invoices_of(OTHER_LOGIN) and not emulator.invoices_of(LOGIN)
    assert names(ws.inbox) == {"a.pdf"}
    assert await running.stop() == 0
