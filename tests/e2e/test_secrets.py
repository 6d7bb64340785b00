"""Secrets never leave: a server that echoes request headers, and everything the daemon wrote."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers import LOGIN, Workspace, run_cli, to_toml

from daemon.testing.emulator import Emulator, Faults, serve
from daemon.testing.samples import facturx_pdf

# Characters that a page would escape (&, <, +, /) so that every echoed form is tried.
SECRET = "s3cr3t&key+with/odd<chars>"
STAGING = "stg-t0ken&more"


def everything_written(root: Path) -> list[tuple[Path, bytes]]:
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out.append((path, path.read_bytes()))
    return out


def leaks(data: bytes) -> list[str]:
    return [core for core in ("s3cr3t", "stg-t0ken") if core.encode() in data]


async def test_echoed_headers_never_reach_logs_journal_sidecars_or_lookup(ws: Workspace):
    faults = Faults(echo_headers=True, reject_marker=b"REJECT-ME", server_error_first=2)
    emulator = Emulator({LOGIN: SECRET}, staging_token=STAGING, faults=faults, seed=5)
    for i in range(4):
        ws.invoice(f"ok-{i}.pdf", f"OK-{i}")
    bad = ws.inbox / "bad.pdf"
    bad.write_bytes(facturx_pdf(ws.root / "src.pdf", "BAD").read_bytes() + b"\n% REJECT-ME\n")
    env = {"QONTO_SECRET_KEY": SECRET, "QONTO_STAGING": STAGING}
    outputs: list[str] = []
    async with serve(emulator) as url:
        raw = ws.config_dict(url)
        raw["qonto"]["staging_token_env"] = "QONTO_STAGING"
        toml = ws.root / "config.toml"
        toml.write_text(to_toml(raw), encoding="utf-8")
        code, out, err = await run_cli("run", "--config", str(toml), "--once", env=env)
        outputs += [out, err]
        assert code == 1, err  # the rejected file
        assert emulator.statuses.get(422) and sum(
            n for s, n in emulator.statuses.items() if s >= 500
        ), emulator.statuses
        # A refused key: the 401 page echoes the headers too.
        emulator.faults.unauthorized = True
        ws.invoice("later.pdf", "LATER")
        code, out, err = await run_cli("run", "--config", str(toml), "--once", env=env)
        outputs += [out, err]
        assert code == 1 and "org_paused" in out
    report = json.loads((ws.failed / "bad.pdf.error.json").read_text())
    assert "[redacted]" in report["detail"]  # the echo was there, and was cleaned
    code, out, err = await run_cli(
        "lookup", "--config", str(toml), "--json", str(ws.failed / "bad.pdf"),
        str(ws.inbox / "later.pdf"), env=env,
    )
    outputs += [out, err]
    assert code == 0 and "[redacted]" in out
    for text in outputs:
        assert not leaks(text.encode()), text
    written = everything_written(ws.root)
    assert any(p.suffix == ".sqlite3" for p, _ in written)
    for path, data in written:
        if path == toml:
            continue
        assert not leaks(data), path
    assert sys.executable  # the daemon ran as a real process


def _environs(pids: list[int]) -> dict[int, bytes]:
    return {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in pids}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def test_parser_and_rules_processes_never_inherit_the_secrets(ws: Workspace):
    """They read untrusted files: whatever runs there finds no key in its environment."""
    import signal

    from helpers import SECRET as KEY
    from helpers import daemon, finish, seen, wait_for

    emulator = Emulator({LOGIN: KEY}, seed=6)
    async with serve(emulator) as url:
        toml = ws.root / "config.toml"
        toml.write_text(to_toml(ws.config_dict(url, validation={"rules": "warn"})),
                        encoding="utf-8")
        log = ws.root / "daemon.log"
        proc = await daemon(toml, log)  # the key in its environment, as systemd gives it
        try:
            ws.invoice("a.pdf", "ENV-1")
            await wait_for(lambda: seen(log, "file_imported"), timeout_s=90, what="the import")
            environs = _environs(_descendants(proc.pid))
            assert len(environs) >= 3  # the forkserver, a parser, a rules worker
            for pid, environ in environs.items():
                assert KEY.encode() not in environ, pid
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await finish(proc) == 0
