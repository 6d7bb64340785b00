"""What a kill leaves in done/ and failed/: temporary copies, and copies already complete.

At start-up the temporaries of dead daemons are removed; a file the journal
says was imported but is no longer in its inbox is looked for in done/ under
its name or a name made from it. All of it blocks: call it in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from pathlib import Path

from .mover import HOST, SIDECAR_SUFFIX, STALE_S, TMP_NAME


def clean_temporaries(directory: Path) -> int:
    """Remove the temporary copies a killed daemon left in `directory`.

    Only our own hidden names are touched: those of this machine whose
    process is gone (another daemon sharing the folder may be copying right
    now), and those of any machine that are a day old.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:  # not there yet, or unreadable: nothing of ours to clean
        return 0
    for entry in entries:
        match = TMP_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group("pid") or match.group("old_pid"))
        mine = match.group("host") in (None, HOST)
        try:
            stale = time.time() - entry.stat(follow_symlinks=False).st_ctime > STALE_S
        except OSError:
            continue
        if not stale and not (mine and (pid == os.getpid() or not _alive(pid))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def copy_candidates(directory: Path, name: str, size: int) -> list[Path]:
    """Files in `directory` that could be `name` filed there: same size, a name made from it."""
    stem = os.path.splitext(os.fsencode(name))[0][:64]
    found: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        if not os.fsencode(entry.name).startswith(stem) or entry.name.endswith(SIDECAR_SUFFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            found.append(Path(entry.path))
    return found


def sha256_of(path: Path) -> str | None:
    """The file's SHA-256, or None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def find_copy(directory: Path, name: str, sha256: str, size: int) -> Path | None:
    """A file in `directory` with this content under `name` or a name made from it.

    Recognises a move that a kill interrupted after the copy got its name.
    Only files of the same size whose name starts like `name` are hashed.
    """
    for candidate in copy_candidates(directory, name, size):
        if sha256_of(candidate) == sha256:
            return candidate
    return None
