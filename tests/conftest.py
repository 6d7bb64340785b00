"""Shared fixtures: real folders in tmp_path, real invoices, the emulator on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemon import config
from daemon.service import Service
from daemon.testing.emulator import Emulator, serve
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
        facturx_pdf(tmp, number or name, net_cents)
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


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Workspace(
        root=tmp_path, inbox=inbox, done=inbox / "done", failed=tmp_path / "failed",
        db=tmp_path / "state" / "state.sqlite3",
    )


@pytest.fixture
async def qonto() -> AsyncIterator[tuple[Emulator, str]]:
    emulator = Emulator({LOGIN: SECRET, OTHER_LOGIN: OTHER_SECRET}, seed=1)
    async with serve(emulator) as base_url:
        yield emulator, base_url


@pytest.fixture(autouse=True)
def _logs() -> Any:
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as captured:
        yield captured
    structlog.reset_defaults()


class Running:
    """A Service running in this event loop, stopped at the end of the test."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.task: asyncio.Task[int] = asyncio.create_task(service.run())

    async def stop(self) -> int:
        if not self.task.done():
            self.service.request_stop("test")
        return await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Running] = []

    async def _start(cfg: config.Config, once: bool = False) -> Running:
        running = Running(Service(cfg, once=once))
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.stop()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Any:
    """Mount a size-limited tmpfs (another filesystem, or a disk that fills up).

    Needs root (or CAP_SYS_ADMIN); the test is skipped cleanly without it.
    """
    import subprocess

    mounted: list[Path] = []

    def _mount(name: str = "mnt", size: str = "16m") -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(point)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or 'not root'}")
        mounted.append(point)
        return point

    yield _mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
