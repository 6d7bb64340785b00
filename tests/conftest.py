"""Fixtures: real folders in tmp_path, the emulator on loopback, services in this loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from helpers import LOGIN, OTHER_LOGIN, OTHER_SECRET, SECRET, Workspace

from daemon import config
from daemon.service import Service
from daemon.testing.emulator import Emulator, serve
from daemon.timing import Intervals

# Intervals short enough that no test waits out the daemon's own rhythms.
QUICK = Intervals(
    journal_check_s=0.2, status_s=0.2, rescan_gap_s=0.2, watcher_start_s=1.0,
    parser_retry_s=0.5, einvoice_recheck_s=0.5, einvoice_paused_s=0.2, idle_poll_s=0.02,
    rules_retry_s=0.5,
)


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

    async def _start(
        cfg: config.Config, once: bool = False, intervals: Intervals = QUICK
    ) -> Running:
        running = Running(Service(cfg, once=once, intervals=intervals))
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
