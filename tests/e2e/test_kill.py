"""A real SIGKILL in the middle of a copy into another filesystem leaves no debris."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from conftest import ENV, Workspace, to_toml, wait_for


async def test_sigkill_during_a_copy_across_filesystems(ws: Workspace, qonto, tmpfs):
    _, url = qonto
    failed = tmpfs("failed", size="1g")
    big = ws.inbox / "scan-huge.pdf"
    with big.open("wb") as fh:  # too large: filed into failed/ by a long copy
        fh.write(b"%PDF-1.7\n")
        fh.truncate(400 * 1024 * 1024)
    # Too large for Qonto, yet small enough to be worth a copy into failed/ (10 x the limit).
    raw = ws.config_dict(url, upload={"max_file_bytes": 50_000_000})
    raw["folders"][0]["failed"] = str(failed)
    toml = ws.root / "config.toml"
    toml.write_text(to_toml(raw), encoding="utf-8")

    def temporaries() -> list[str]:
        return [n for n in os.listdir(failed) if n.startswith(".qonto-invoice-daemon")]

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "run", "--config", str(toml),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    try:
        await wait_for(lambda: bool(temporaries()) or not big.exists(), what="the copy to start",
                       timeout_s=60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        left = temporaries()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert left and big.exists()  # killed mid-copy: a hidden partial copy is left
    # Start again: the half copy is cleaned and the file filed exactly once.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "run", "--config", str(toml), "--once",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    assert await asyncio.wait_for(proc.wait(), 120) == 1  # one failed file
    assert sorted(os.listdir(failed)) == ["scan-huge.pdf", "scan-huge.pdf.error.json"]
    assert not big.exists() and (failed / "scan-huge.pdf").stat().st_size == 400 * 1024 * 1024
    report = json.loads((failed / "scan-huge.pdf.error.json").read_text())
    assert report["reason"] == "too_large"
