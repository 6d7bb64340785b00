"""What the commands share: the exit statuses, which organization a path belongs to."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .. import logs
from ..config import Config
from ..errors import UnsafeFile
from ..flow.examine import read_regular
from ..flow.records import Content

# 75: a temporary failure (a full disk under the journal): systemd may restart.
# 78: a person must act (configuration, an unusable journal): systemd must not.
EX_OK, EX_FAILED, EX_USAGE, EX_TEMPFAIL, EX_CONFIG = 0, 1, 2, 75, 78


def printable(value: object) -> object:
    """Values as a terminal can show them (names need not be UTF-8)."""
    if isinstance(value, str):
        return logs.printable(value)
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    return value


def org_of(cfg: Config, path: Path) -> str | None:
    """The organization whose inbox, done/ or failed/ holds `path`."""
    where = path.resolve().parent
    for folder in cfg.folders:
        if where in (folder.inbox.resolve(), folder.done.resolve(), folder.failed.resolve()):
            return folder.org.key
    return None


async def hash_file(path: Path) -> Content | str:
    """The file's sha256 (in a thread), or why it cannot be read."""
    try:
        return await asyncio.to_thread(read_regular, path, 0)
    except (OSError, UnsafeFile) as exc:
        return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
