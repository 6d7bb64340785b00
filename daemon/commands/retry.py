"""`retry`: failed files back into their inbox; `retry --einvoice`: rejected e-invoices again."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import logs, mover
from ..config import Config, Folder
from ..errors import FileChanged
from ..identity import describe_mode
from ..journal import Journal
from .common import EX_FAILED, EX_OK, hash_file, org_of


def retry_files(cfg: Config, paths: list[Path], everything: bool) -> tuple[list[str], list[str]]:
    """Move failed files back into their inbox, their report removed. (moved, problems).

    Only regular files are moved: a folder, a pipe or a link in failed/ is named as
    a problem and left alone, and one file's trouble never stops the others.
    """
    moved: list[str] = []
    problems: list[str] = []
    targets: list[tuple[Path, Folder]] = []
    by_failed = {f.failed.resolve(): f for f in cfg.folders}
    if everything:
        for folder in cfg.folders:
            try:
                names = sorted(os.listdir(folder.failed))
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{folder.failed}: {exc.strerror or exc}")
                continue
            targets += [
                (folder.failed / n, folder) for n in names
                if not n.endswith(mover.SIDECAR_SUFFIX) and not n.startswith(".")
            ]
    for path in paths:
        # The folder it sits in, not where a link points.
        owner = by_failed.get(path.absolute().parent.resolve())
        if owner is None:
            problems.append(f"{_shown(path)}: not in a failed/ folder of this configuration")
            continue
        targets.append((path, owner))
    for path, folder in targets:
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            problems.append(f"{_shown(path)}: {exc.strerror or exc}")
            continue
        if not stat.S_ISREG(mode):
            problems.append(
                f"{_shown(path)}: {describe_mode(mode)}, not a regular file: not moved"
            )
            continue
        sidecar = path.with_name(path.name + mover.SIDECAR_SUFFIX)
        try:
            dest = mover.move_into(path, folder.inbox)
        except FileChanged:
            problems.append(f"{_shown(path)}: it changed while it was moved: try again")
            continue
        except OSError as exc:
            problems.append(f"{_shown(path)}: {exc.strerror or exc}")
            continue
        sidecar.unlink(missing_ok=True)
        moved.append(f"{_shown(path)} -> {_shown(dest)}")
    return moved, problems


def _shown(path: Path) -> str:
    return logs.printable(str(path))


async def retry_einvoices(cfg: Config, paths: Sequence[Path], everything: bool) -> int:
    """Rejected and held e-invoices become pending: the daemon tries them within a minute."""
    journal = await Journal.open(cfg.database)
    status = EX_OK
    try:
        if everything:
            count = await journal.retry_einvoices()
            print(f"{count} rejected e-invoice(s) will be sent again")
            return EX_OK
        for path in paths:
            shown = logs.printable(str(path))
            content = await hash_file(path)
            if isinstance(content, str):
                print(f"qonto-invoice-daemon: retry: {shown}: cannot read: {content}",
                      file=sys.stderr)
                status = EX_FAILED
                continue
            org = org_of(cfg, path)
            count = 0
            for r in await journal.find(content.sha256):
                if org is None or r.org == org:
                    count += await journal.retry_einvoices(r.org, r.sha256)
            if count:
                print(f"will send again: {shown}")
            else:
                print(f"qonto-invoice-daemon: retry: {shown}: no rejected e-invoice for this "
                      "file", file=sys.stderr)
                status = EX_FAILED
    finally:
        await journal.close()
    return status
