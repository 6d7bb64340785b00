"""Moving files into done/ and failed/: never overwrite, survive power loss.

All of it blocks: call it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import threading
from collections.abc import Mapping
from pathlib import Path

SIDECAR_SUFFIX = ".error.json"
# Choosing a free name and taking it must be one step: several threads (two
# uploaders, the intake) may file into one folder. Only this daemon writes there.
_claim = threading.Lock()


class Changed(Exception):
    """The file is no longer the one that was judged (rewritten or replaced)."""


Expect = tuple[int, int] | None  # (size, mtime_ns) the file must still have
_TMP_PREFIX = ".qonto-invoice-daemon-"  # hidden: watchers of that folder skip it


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some network filesystems refuse fsync on directories; the rename stands.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def free_name(directory: Path, name: str, *, sidecar: bool = False) -> Path:
    """`name` in `directory`, or `stem-1.ext`, `stem-2.ext`... whichever is free.

    With `sidecar`, the name's `.error.json` companion must be free as well.
    """
    stem, ext = os.path.splitext(name)
    candidate = name
    n = 0
    while os.path.lexists(directory / candidate) or (
        sidecar and os.path.lexists(directory / (candidate + SIDECAR_SUFFIX))
    ):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return directory / candidate


def move_into(src: Path, directory: Path, expect: Expect = None) -> Path:
    """Move `src` into `directory` under a free name and return where it went.

    A rename when both are on one filesystem; otherwise a copy that is
    fsynced before the original is removed. With `expect`, raises Changed
    instead if the file's size or mtime is no longer the one judged.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with _claim:
        _check(src, expect)
        dest = free_name(directory, src.name)
        _move(src, dest)
    _sync(src, dest)
    return dest


def _check(src: Path, expect: Expect) -> None:
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode) or (
        expect is not None and (st.st_size, st.st_mtime_ns) != expect
    ):
        raise Changed(str(src))


def fail_into(
    src: Path, directory: Path, report: Mapping[str, object], expect: Expect = None
) -> Path:
    """Move `src` into `directory` with `<its name>.error.json` beside it.

    The sidecar is written first: if the machine stops in between, the file is
    still in the inbox and will be handled again, never a failed file without
    its reason.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with _claim:
        _check(src, expect)
        dest = free_name(directory, src.name, sidecar=True)
        write_json_atomic(dest.with_name(dest.name + SIDECAR_SUFFIX), report)
        _move(src, dest)
    _sync(src, dest)
    return dest


def write_json_atomic(path: Path, data: Mapping[str, object]) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{path.name}")
    body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _move(src: Path, dest: Path) -> None:
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(src, dest)


def _sync(src: Path, dest: Path) -> None:
    fsync_dir(dest.parent)
    if src.parent != dest.parent:
        fsync_dir(src.parent)


def _copy_across(src: Path, dest: Path) -> None:
    """Another filesystem: copy under a hidden name, fsync, rename, then delete."""
    tmp = dest.with_name(f"{_TMP_PREFIX}{os.getpid()}-{dest.name}")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        os.rename(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)
    try:
        os.unlink(src)
    except OSError:
        # The original stays, so the copy must go: one file, one place.
        os.unlink(dest)
        raise

