"""What makes a file "the same file": everything a writer cannot preserve.

Size and mtime alone are not an identity: writers that keep the invoice date
as mtime can replace a file by another of the same size. The inode (and its
device) changes when a file is replaced by rename, and ctime changes on every
write, rename, chmod and utime. Whenever the daemon asks "is this still the
file I judged?", it compares all five.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @classmethod
    def lstat(cls, path: Path) -> Identity:
        """The identity of `path` itself (a link is not followed). Raises OSError."""
        return cls.of(os.lstat(path))


@dataclass(frozen=True)
class Seen:
    """A file as a listing or a stat found it."""

    path: Path
    identity: Identity


def describe_mode(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
