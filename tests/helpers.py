"""What the tests share: the workspace, waiting for conditions, reading logs, running the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import config
from daemon.journal import Journal
from daemon.testing.samples import facturx_pdf

LOGIN = "acme-corp-1234"
SECRET = "s3cret-key-for-tests"
OTHER_LOGIN = "other-org-5678"
OTHER_SECRET = "other-s3cret"
ENV = {"QONTO_SECRET_KEY": SECRET, "QONTO_SECRET_KEY_OTHER": OTHER_SECRET}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def wait_for(
    condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll `condition` until it holds; fail after `timeout_s` (never sleep and hope)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Workspace:
    root: Path
    inbox: Path
    done: Path
    failed: Path
    db: Path

    def invoice(self, name: str, number: str | None = None, net_cents: int = 10000,
                folder: Path | None = None) -> Path:
        """A real Factur-X invoice written (whole) into the inbox."""
        target = (folder or self.inbox) / name
        tmp = target.with_name("." + target.name + ".tmp")
        facturx_pdf(tmp, number or invoice_number(name), net_cents)
        tmp.rename(target)
        return target

    def config_dict(self, base_url: str, **sections: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "qonto": {"base_url": base_url, "login": LOGIN, "secret_key_env": "QONTO_SECRET_KEY"},
            "database": {"path": str(self.db)},
            "watch": {"settle_seconds": 0.3, "rescan_seconds": 60.0},
            "upload": {
                "linger_seconds": 0.1,
                "backoff_initial_seconds": 0.05,
                "backoff_max_seconds": 0.2,
                "auth_pause_initial_seconds": 0.3,
                "auth_pause_max_seconds": 0.6,
                "timeout_seconds": 5.0,
            },
            "service": {"shutdown_grace_seconds": 5.0},
            "folders": [
                {"inbox": str(self.inbox), "done": str(self.done), "failed": str(self.failed)}
            ],
        }
        for name, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(name, {}).update(values)
            else:
                raw[name] = values
        return raw

    def config(self, base_url: str, **sections: Any) -> config.Config:
        return config.from_dict(
            self.config_dict(base_url, **sections), env=ENV, base_dir=self.root
        )

    def write_toml(self, base_url: str, **sections: Any) -> Path:
        path = self.root / "config.toml"
        path.write_text(to_toml(self.config_dict(base_url, **sections)), encoding="utf-8")
        return path


def to_toml(raw: dict[str, Any]) -> str:
    """Just enough TOML for our configs (tables, arrays of tables, scalars)."""
    import json

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(v, ensure_ascii=False)

    lines: list[str] = []
    for name, value in raw.items():
        if isinstance(value, list):
            for item in value:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {scalar(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{name}]")
            lines += [f"{k} = {scalar(v)}" for k, v in value.items()]
        lines.append("")
    return "\n".join(lines)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """`wait_for` for a condition that must be awaited (a journal read)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.exists() else set()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def journal_row(ws: Workspace, sha: str, org: str = LOGIN) -> Any:
    journal = await Journal.open(ws.db)
    try:
        return await journal.get(org, sha)
    finally:
        await journal.close()


async def journal_state(ws: Workspace, sha: str, org: str = LOGIN) -> str | None:
    row = await journal_row(ws, sha, org)
    return None if row is None else str(row.state)


# -- subprocesses: the daemon and its commands as a person runs them ---------------


async def run_cli(
    *args: str, timeout_s: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def log_events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def seen(log: Path, event: str) -> bool:
    return any(e["event"] == event for e in log_events(log))


async def daemon(toml: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as fh:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", "--config", str(toml),
            stdout=fh, stderr=fh, env={**os.environ, **ENV},
        )


async def finish(proc: asyncio.subprocess.Process) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- e-invoicing ----------------------------------------------------------------------

FAST_EINVOICING = {"poll_initial_seconds": 0.2, "poll_max_seconds": 0.4, "track_days": 30.0}


def sending(ws: Workspace, url: str, **sections: Any) -> dict[str, Any]:
    """A configuration whose folder sends its imports by e-invoice, tracked quickly."""
    raw = ws.config_dict(url, einvoicing=FAST_EINVOICING, **sections)
    raw["folders"][0]["send_by_einvoice"] = True
    return raw


def invoice_number(name: str) -> str:
    """An invoice number the French rules accept (BR-FR-01, 02), one per file name."""
    stem = name.rsplit(".", 1)[0] if name.lower().endswith(".pdf") else name
    clean = re.sub(r"[^0-9A-Za-z+_/-]", "-", stem)
    if clean == stem and 0 < len(clean) <= 35:
        return clean
    return f"{clean[:26]}-{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
