"""Everything at once: a faulty server, a 401 window, a forbidden organization, and SIGKILLs.

The daemon runs as a real subprocess against the emulator on loopback and is
killed with SIGKILL several times while it works. At the end every valid file
must be in done/ with the emulator's invoice_id in the journal, every bad one in
failed/ with its reason, the forbidden organization's files still in their
inbox, no invoice on the emulator that should not be there, and SIGTERM must
end the daemon with status 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from helpers import ENV, LOGIN, OTHER_LOGIN, Workspace, sha256_of, to_toml, wait_for

from daemon.journal import Journal
from daemon.testing.emulator import Emulator, Faults, serve
from daemon.testing.samples import facturx_pdf

VALID = 24
KILLS = 5


async def start_daemon(config_path: Path, log_path: Path) -> asyncio.subprocess.Process:
    log = log_path.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", "--config", str(config_path),
            stdout=log, stderr=log, env={**os.environ, **ENV},
        )
    finally:
        log.close()


@pytest.mark.timeout(300)
async def test_survives_faults_and_sigkill(ws: Workspace, tmp_path: Path):
    rng = random.Random(20261124)
    faults = Faults(
        rate_limited=0.10, retry_after_s=0.2, server_error=0.10, drop_before=0.07,
        drop_after=0.08, slow=0.06, slow_s=2.0, reject_marker=b"REJECT-ME",
        forbidden_logins={OTHER_LOGIN},
    )
    emulator = Emulator({LOGIN: "s3cret-key-for-tests", OTHER_LOGIN: "other-s3cret"},
                        faults=faults, seed=7)
    italy = tmp_path / "italy"
    italy.mkdir()

    valid = [ws.invoice(f"F-{i:03}.pdf", f"F-{i:03}", 1000 + i) for i in range(VALID)]
    bad_remote = ws.inbox / "F-bad.pdf"
    src = facturx_pdf(tmp_path / "bad-src.pdf", "F-BAD")
    bad_remote.write_bytes(src.read_bytes() + b"\n% REJECT-ME\n")
    (ws.inbox / "notes.pdf").write_text("not an invoice")
    italian = [ws.invoice(f"IT-{i}.pdf", f"IT-{i}", folder=italy) for i in range(3)]
    valid_shas = {p.name: sha256_of(p) for p in valid}
    log_path = tmp_path / "daemon.log"

    async with serve(emulator) as url:
        raw = ws.config_dict(
            url,
            upload={"timeout_seconds": 1.0, "connect_timeout_seconds": 1.0,
                    "backoff_max_seconds": 0.3, "linger_seconds": 0.1},
            watch={"settle_seconds": 0.2},
        )
        raw["folders"].append({
            "inbox": str(italy), "done": str(italy / "done"), "failed": str(italy / "failed"),
            "login": OTHER_LOGIN, "secret_key_env": "QONTO_SECRET_KEY_OTHER",
        })
        config_path = tmp_path / "config.toml"
        config_path.write_text(to_toml(raw), encoding="utf-8")

        # Files keep arriving while the daemon is killed and restarted.
        late = [ws.root / f"L-{i:03}.pdf" for i in range(6)]
        for i, path in enumerate(late):
            facturx_pdf(path, f"L-{i:03}", 5000 + i)
            valid_shas[path.name] = sha256_of(path)

        proc = await start_daemon(config_path, log_path)
        try:
            for kill in range(KILLS):
                # Cut while it works: right after the server has seen a request.
                seen = emulator.requests
                await wait_for(lambda seen=seen: emulator.requests > seen, what="a request")
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                if kill == 1:
                    emulator.faults.unauthorized = True  # a window of 401s
                if kill == 3:
                    emulator.faults.unauthorized = False
                for path in late[kill::KILLS]:
                    path.rename(ws.inbox / path.name)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                assert proc.returncode == -signal.SIGKILL
                proc = await start_daemon(config_path, log_path)
            emulator.faults.unauthorized = False

            def settled() -> bool:
                done = {p.name for p in ws.done.glob("*.pdf")} if ws.done.exists() else set()
                failed = {p.name for p in ws.failed.glob("*.pdf")} if ws.failed.exists() else set()
                return done == set(valid_shas) and failed == {"F-bad.pdf", "notes.pdf"}

            await wait_for(settled, timeout_s=150, what="every file filed")
            # The forbidden organization is still being refused; its files wait.
            await wait_for(lambda: emulator.statuses.get(403, 0) > 0, what="a 403")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-3000:]
    # What reached Qonto is exactly the valid content, each once.
    created = emulator.invoices_of(LOGIN)
    assert set(created) == set(valid_shas.values())
    assert not emulator.invoices_of(OTHER_LOGIN)
    # The journal agrees with Qonto for every file in done/ (no suffixed copies).
    journal = await Journal.open(ws.db)
    try:
        for name, sha in valid_shas.items():
            assert sha256_of(ws.done / name) == sha
            row = await journal.get(LOGIN, sha)
            assert row is not None and row.state == "done", (name, row)
            assert row.invoice_id == created[sha]
    finally:
        await journal.close()
    assert sorted(p.name for p in ws.done.iterdir()) == sorted(valid_shas)
    # Bad files are in failed/ with a reason a person can act on.
    remote = json.loads((ws.failed / "F-bad.pdf.error.json").read_text())
    assert remote["reason"] == "rejected_by_qonto" and "invoice number" in remote["detail"]
    local = json.loads((ws.failed / "notes.pdf.error.json").read_text())
    assert local["reason"] == "unsupported_type"
    # The forbidden organization's files are untouched in their inbox.
    assert sorted(p.name for p in italy.iterdir() if p.is_file()) == sorted(
        p.name for p in italian
    )
    # The faults really happened.
    statuses = emulator.statuses
    assert statuses.get(401, 0) > 0 and statuses.get(429, 0) > 0, statuses
    assert any(statuses.get(s, 0) for s in (500, 502, 503, 504)), statuses
