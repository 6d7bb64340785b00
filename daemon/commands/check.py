"""`check-config`: what `run` would trip on, before (re)starting; `--online` asks Qonto too."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from pathlib import Path

import aiohttp

from ..config import Config
from ..errors import AuthProblem, JournalError, QontoError
from ..journal import Journal
from ..lock import InstanceLock
from ..oauth import TokenSource
from ..qonto import probe
from ..redact import Redactor

_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "sshfs")


def check_paths(cfg: Config) -> tuple[list[str], list[str]]:
    """What `run` would trip on: (problems, notes). Blocking: it stats folders."""
    problems: list[str] = []
    notes = list(cfg.notes)
    for index, folder in enumerate(cfg.folders):
        where = f"folders[{index}]"
        if not os.access(folder.inbox, os.R_OK | os.X_OK):
            problems.append(f"{where}.inbox {folder.inbox}: missing or not readable")
        elif not os.access(folder.inbox, os.W_OK | os.X_OK):
            # Every file leaves its inbox (into done/ or failed/): a removal there.
            problems.append(
                f"{where}.inbox {folder.inbox}: not writable, so imported files could not "
                "be moved out of it"
            )
        for key, path in (("done", folder.done), ("failed", folder.failed)):
            if not _writable(path):
                problems.append(f"{where}.{key} {path}: cannot be created or written")
        if _device(folder.inbox) != _device(folder.done) and _device(folder.done) is not None:
            notes.append(
                f"{where}.done {folder.done} is on another filesystem than the inbox: "
                "each move is a copy"
            )
    journal_dir = cfg.database.parent
    if not _writable(journal_dir):
        problems.append(f"database.path {cfg.database}: its folder cannot be created or written")
    else:
        kind = _fs_type(journal_dir)
        if kind and (kind in _NETWORK_FS or kind.startswith("fuse")):
            notes.append(
                f"database.path {cfg.database} is on a {kind} filesystem: keep the journal on "
                "local disk (SQLite does not work reliably on network shares)"
            )
    return problems, notes


def check_paths_as(cfg: Config, user: str | None) -> tuple[list[str], list[str]]:
    """check_paths as `user` would reach the paths (as root: in a child process that
    takes that user's ids and groups), or as whoever runs this."""
    if user is None:
        problems, notes = check_paths(cfg)
        if os.geteuid() == 0:
            notes.append("checked as root, who may do anything: add --user NAME (the "
                         "service's User=) to check what that user may do")
        return problems, notes
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return [f"--user {user}: no such user on this machine"], []
    if os.geteuid() != 0:
        return [f"--user {user}: only root can check as another user"], []
    groups = os.getgrouplist(user, entry.pw_gid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: that user's ids, nothing else
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            try:
                found = check_paths(cfg)
            except OSError as exc:
                found = ([f"cannot check the paths: {exc.strerror or exc}"], [])
            with os.fdopen(write_end, "w", encoding="utf-8") as out:
                json.dump(found, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    try:
        problems, notes = json.loads(text)
    except ValueError:
        return [f"--user {user}: the check could not run as that user"], []
    return [f"{p} (as {user})" for p in problems], notes


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, though this user may not look inside its folder
    return True


def _existing(path: Path) -> Path:
    while not _exists(path) and path != path.parent:
        path = path.parent
    return path


def _writable(path: Path) -> bool:
    """Whether the daemon's user could create `path` (if needed) and write in it."""
    base = _existing(path)
    return os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)


def _device(path: Path) -> int | None:
    try:
        return _existing(path).stat().st_dev
    except OSError:
        return None


def _fs_type(path: Path) -> str | None:
    """The filesystem type of the mount `path` is on (from /proc/self/mounts)."""
    target = os.path.realpath(_existing(path))
    best: tuple[int, str] | None = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > best[0]):
                    best = (len(point), fields[2])
    except OSError:
        return None
    return best[1] if best else None


async def check_online(cfg: Config) -> tuple[list[str], list[str]]:
    """(problems, notes): the problems found are empty when every organization answered."""
    problems: list[str] = []
    notes: list[str] = []
    redact = Redactor(cfg.secret_values())
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=cfg.upload.connect_timeout_s)
    oauth = [org for org in cfg.organizations if org.oauth is not None]
    lock = InstanceLock(cfg.database)
    # A refresh rotates the token: only while no daemon runs, and stored as `run` would,
    # in a journal that exists (check-config makes none).
    exists = await asyncio.to_thread(cfg.database.exists)
    own_lock = bool(oauth) and exists and await asyncio.to_thread(lock.acquire)
    journal = None
    try:
        if own_lock:
            journal = await Journal.open(cfg.database)
    except JournalError as exc:
        lock.release()
        return [f"{exc}: {exc.hint}"], notes
    try:
        async with aiohttp.ClientSession() as session:
            for org in cfg.organizations:
                tokens = None
                if org.oauth is not None:
                    if journal is None:
                        why = ("while a daemon runs" if exists
                               else "before the first run has made the journal")
                        notes.append(
                            f"organization {org.login}: OAuth not checked online {why} "
                            "(a refresh rotates the token, and only the journal keeps the new one)"
                        )
                        continue
                    tokens = TokenSource(org, session, journal, redact, timeout)
                try:
                    await probe(session, org, timeout, redact, tokens)
                except AuthProblem as exc:
                    problems.append(f"organization {org.login}: {exc} ({exc.hint})")
                except QontoError as exc:
                    problems.append(f"organization {org.login}: {org.base_url} answered {exc}")
    finally:
        if journal is not None:
            await journal.close()
        lock.release()
    return problems, notes
