"""Moving files into done/ and failed/: never overwrite, survive power loss and kills.

Other processes may write the same folders (a second daemon, a person), so a
destination name is claimed atomically, never chosen first and taken later:
`link()` fails with EEXIST where `rename()` would silently replace. Across
filesystems (or where a share refuses hard links) the file is copied under a
hidden temporary name, fsynced, and the final name is claimed the same way.
The original is removed last, and only if it is still the file that was
judged; if someone else removed it first, the copy is the one left.

All of it blocks: call it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import socket
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import FileChanged
from .identity import Identity

SIDECAR_SUFFIX = ".error.json"
# Hidden (watchers of the folder skip it) and short (any name fits beside it).
# The host and pid say whose it is: daemons on other machines may share the folder.
_TMP_PREFIX = ".qonto-invoice-daemon."
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
TMP_NAME = re.compile(
    r"\.qonto-invoice-daemon(?:\.(?:(?P<host>[A-Za-z0-9-]+)\.)?(?P<pid>\d+)\.\d+\.tmp"
    r"|-(?P<old_pid>\d+)-.*)$"  # the second form: version 0.1.0's
)
STALE_S = 24 * 3600  # a temporary this old is nobody's copy in progress
_tmp_counter = itertools.count()
# A share that refuses hard links says so with one of these; then we copy.
_NO_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}
)
_NAME_MAX = 255
_MAX_EXT_BYTES = 16  # a longer "extension" is part of the name, not a type


def fsync_dir(path: Path) -> None:
    """Make a name change durable, as far as the folder allows.

    Best effort: a drop-box folder the daemon may write but not read, or a
    share that refuses fsync on directories, cannot be synced, and the link or
    rename that came before stands all the same. Failing here would leave a
    file placed but reported as not moved, and the next try would file it twice.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def name_max(directory: Path) -> int:
    """The longest name, in bytes, that the folder's filesystem accepts."""
    try:
        return min(_NAME_MAX, os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return _NAME_MAX


def candidates(name: str, *, reserve_bytes: int = 0, limit: int = _NAME_MAX) -> Iterator[str]:
    """`name`, then `stem-1.ext`, `stem-2.ext`... each shortened to fit.

    A name must fit in `limit` bytes with `reserve_bytes` to spare (for a
    sidecar's suffix). Shortening cuts the end of the stem, never the
    extension, and never inside a UTF-8 character; uniqueness comes from
    claiming each candidate atomically, not from the name itself.
    """
    raw = os.fsencode(name)
    stem, ext = os.path.splitext(raw)
    if len(ext) > _MAX_EXT_BYTES:
        stem, ext = raw, b""
    for n in itertools.count():
        suffix = b"-%d" % n if n else b""
        room = limit - reserve_bytes - len(ext) - len(suffix)
        yield os.fsdecode(_cut(stem, room) + suffix + ext)


def _cut(raw: bytes, room: int) -> bytes:
    if len(raw) <= room:
        return raw
    cut = raw[: max(room, 1)]
    # Step back over a UTF-8 character split in two (continuation bytes, then its lead).
    end = len(cut)
    while end > 1 and (cut[end - 1] & 0xC0) == 0x80:
        end -= 1
    if end < len(cut) and cut[end - 1] >= 0xC0:
        end -= 1
    return cut[:end] if end > 0 else cut


def check(src: Path, expect: Identity | None) -> Identity:
    """The file's identity, or FileChanged if it is not the regular file judged."""
    st = os.lstat(src)
    found = Identity.of(st)
    if not stat.S_ISREG(st.st_mode) or (expect is not None and found != expect):
        raise FileChanged(str(src))
    return found


class TooBigToCopy(OSError):
    """The file cannot be linked there, and is too big to be worth a copy."""


class _Placement:
    """One file on its way into one folder: link it there, or copy it once."""

    def __init__(
        self,
        src: Path,
        directory: Path,
        expect: Identity | None,
        max_copy_bytes: int | None = None,
    ) -> None:
        self.src = src
        self.directory = directory
        self.judged = check(src, expect)
        self._link = True
        self._max_copy_bytes = max_copy_bytes
        self._tmp: Path | None = None
        # What the original must still be when it is removed: as judged, or, once
        # linked, as the link left it (a link changes the inode's ctime).
        self._expected = self.judged

    def place(self, dest: Path) -> None:
        """Make `dest` hold the file; FileExistsError if the name is taken."""
        if self._link:
            try:
                os.link(self.src, dest, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                self._link = False
            else:
                linked = Identity.lstat(dest)
                if (linked.dev, linked.ino, linked.size, linked.mtime_ns) != (
                    self.judged.dev, self.judged.ino, self.judged.size, self.judged.mtime_ns
                ):
                    _unlink_quietly(dest)  # changed just before the link
                    raise FileChanged(str(self.src))
                self._expected = linked
                return
        if self._tmp is None:
            if self._max_copy_bytes is not None and self.judged.size > self._max_copy_bytes:
                raise TooBigToCopy(errno.EFBIG, "too big to copy into another filesystem")
            self._tmp = self._copy()
        _claim(self._tmp, dest)

    def _copy(self) -> Path:
        """Copy the original under a hidden name, fsynced, checking it did not change."""
        tmp = self.directory / _tmp_name()
        fin = os.open(self.src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fin)
            if Identity.of(st) != self.judged:
                raise FileChanged(str(self.src))
            fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                while chunk := os.read(fin, 1 << 20):
                    _write_all(fout, chunk)
                os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.chmod(fout, stat.S_IMODE(st.st_mode))
                os.fsync(fout)
            finally:
                os.close(fout)
            if Identity.of(os.fstat(fin)) != self.judged:
                raise FileChanged(str(self.src))
        except BaseException:
            _unlink_quietly(tmp)
            raise
        finally:
            os.close(fin)
        return tmp

    def finish(self, dest: Path) -> None:
        """Remove the original (it is now at `dest`) and the temporary copy.

        Raises FileChanged, after removing `dest`, if the original was written
        to meanwhile (a slow share makes the copy and its fsync take a while):
        then the file at dest is not the file that is there now.
        """
        self.abandon()
        fsync_dir(dest.parent)
        try:
            now = Identity.lstat(self.src)
        except FileNotFoundError:
            return  # someone else moved or deleted it: the copy at dest is the one left
        if (now.dev, now.ino) != (self._expected.dev, self._expected.ino):
            return  # a new file took the name meanwhile: it is not ours to remove
        if now != self._expected:
            _unlink_quietly(dest)  # rewritten in place: not what was judged
            raise FileChanged(str(self.src))
        try:
            os.unlink(self.src)
        except FileNotFoundError:
            return
        except OSError:
            # The original cannot go (a read-only inbox), so our copy must: one file, one place.
            _unlink_quietly(dest)
            raise
        fsync_dir(self.src.parent)

    def abandon(self) -> None:
        if self._tmp is not None:
            _unlink_quietly(self._tmp)
            self._tmp = None


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a filling disk); the rest must follow or fail."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _claim(tmp: Path, dest: Path) -> None:
    """Give the complete file `tmp` the name `dest`, unless that name exists."""
    try:
        os.link(tmp, dest)
        return
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    # No hard links here: take the name with an exclusive create, then rename
    # our copy over our own placeholder (removed again if the rename fails).
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        placeholder = Identity.of(os.fstat(fd))
    finally:
        os.close(fd)
    try:
        os.rename(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            if Identity.lstat(dest) == placeholder:
                os.unlink(dest)
        raise


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def move_into(src: Path, directory: Path, expect: Identity | None = None) -> Path:
    """Move `src` into `directory` under a free name and return where it went.

    Raises FileChanged if the file is no longer the one judged (`expect`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    placement = _Placement(src, directory, expect)
    try:
        for name in candidates(src.name, limit=name_max(directory)):
            dest = directory / name
            try:
                placement.place(dest)
            except FileExistsError:
                continue
            placement.finish(dest)
            return dest
    finally:
        placement.abandon()
    raise AssertionError("unreachable: candidates never end")


def fail_into(
    src: Path,
    directory: Path,
    report: Mapping[str, object],
    expect: Identity | None = None,
    max_copy_bytes: int | None = None,
) -> Path:
    """Move `src` into `directory` with `<its name>.error.json` beside it.

    The sidecar is claimed first: if the machine stops in between, the file is
    still in the inbox and will be handled again, never a failed file without
    its reason. A sidecar left that way (it names the same content and has no
    file beside it) is taken over instead of piling up another one. If the
    file cannot be moved, its sidecar is removed again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    placement = _Placement(src, directory, expect, max_copy_bytes)
    sidecar_tmp = directory / _tmp_name()
    try:
        body = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
        _write_synced(sidecar_tmp, body)
        limit = name_max(directory)
        for name in candidates(src.name, reserve_bytes=len(SIDECAR_SUFFIX), limit=limit):
            dest = directory / name
            sidecar = directory / (name + SIDECAR_SUFFIX)
            if os.path.lexists(dest):
                continue
            taken_over = False
            try:
                _claim(sidecar_tmp, sidecar)
            except FileExistsError:
                if os.path.lexists(dest) or not _orphan_of(sidecar, report):
                    continue
                os.replace(sidecar_tmp, sidecar)  # our own orphan: take it over
                taken_over = True
            try:
                placement.place(dest)
            except FileExistsError:
                # Someone placed a file there first. A sidecar we took over describes
                # the same content, so it stays with that file; a fresh one was ours.
                if not taken_over:
                    _unlink_quietly(sidecar)
                _write_synced(sidecar_tmp, body)
                continue
            except BaseException:
                _unlink_quietly(sidecar)
                raise
            try:
                placement.finish(dest)
            except BaseException:
                _unlink_quietly(sidecar)
                raise
            return dest
    finally:
        placement.abandon()
        _unlink_quietly(sidecar_tmp)
    raise AssertionError("unreachable: candidates never end")


def _orphan_of(sidecar: Path, report: Mapping[str, object]) -> bool:
    """Whether `sidecar` is a report about this same file (left by a crash).

    The same content by its sha256; a file judged by its size alone (no
    sha256), by its name, size, organization and inbox.
    """
    try:
        with open(sidecar, encoding="utf-8") as fh:
            found = json.load(fh)
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict):
        return False
    if report.get("sha256") is not None:
        return found.get("sha256") == report["sha256"]
    keys = ("sha256", "file_name", "size", "organization", "inbox")
    return all(found.get(k) == report.get(k) for k in keys)


def write_sidecar_beside(src: Path, report: Mapping[str, object]) -> Path:
    """The report next to a file that stays where it is (`*.error.json` is never input)."""
    limit = name_max(src.parent)
    name = next(candidates(src.name, reserve_bytes=len(SIDECAR_SUFFIX), limit=limit))
    sidecar = src.with_name(name + SIDECAR_SUFFIX)
    tmp = src.parent / _tmp_name()
    try:
        _write_synced(tmp, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        os.replace(tmp, sidecar)
    finally:
        _unlink_quietly(tmp)
    fsync_dir(src.parent)
    return sidecar


def _write_synced(path: Path, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with open(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _tmp_name() -> str:
    return f"{_TMP_PREFIX}{HOST}.{os.getpid()}.{next(_tmp_counter)}.tmp"
