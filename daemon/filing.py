"""Putting a file away: the journal first, then the move, then the log line.

Shared by the intake (duplicates, local rejections) and the uploader
(imports, server rejections), so that every file ends the same way.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import structlog

from . import mover
from .config import Folder
from .journal import Journal

log = structlog.get_logger()
_CHANGED = "rewritten since it was checked; it settles and is checked again"


class Filing:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def done(
        self,
        folder: Folder,
        path: Path,
        sha256: str,
        invoice_id: str,
        *,
        expect: mover.Expect,
        event: str = "file_imported",
        **fields: object,
    ) -> Path | None:
        """Move an imported file into done/ (its invoice_id is already committed).

        Returns where it went, or None when it was not moved: it vanished, it
        was rewritten since it was judged (then `changed` says so and it must be
        looked at again), or the move failed (the next scan tries again,
        without uploading).
        """
        org = folder.org.key
        try:
            dest = await asyncio.to_thread(mover.move_into, path, folder.done, expect)
        except mover.Changed:
            log.info("file_changed", path=path, sha256=sha256, org=org, detail=_CHANGED)
            raise
        except FileNotFoundError:
            log.warning("file_vanished", path=path, sha256=sha256, org=org, invoice_id=invoice_id)
            return None
        except OSError as exc:
            log.error(
                "file_move_failed",
                path=path,
                folder=folder.done,
                sha256=sha256,
                org=org,
                invoice_id=invoice_id,
                error=f"{exc.strerror or exc}",
                hint="the invoice is imported; fix the permissions of done/ "
                "and the file will be moved at the next scan",
            )
            return None
        await self._journal.mark_done(org, sha256, dest)
        log.info(
            event, path=path, dest=dest, sha256=sha256, org=org, invoice_id=invoice_id, **fields
        )
        return dest

    async def failed(
        self,
        folder: Folder,
        path: Path,
        *,
        sha256: str,
        file_name: str,
        size: int,
        reason: str,
        detail: str,
        expect: mover.Expect,
        **extra: object,
    ) -> Path | None:
        """Record a rejection, then move the file into failed/ with its sidecar."""
        org = folder.org.key
        await self._journal.mark_failed(org, sha256, path, file_name, size, f"{reason}: {detail}")
        report: dict[str, object] = {
            "reason": reason,
            "detail": detail,
            "sha256": sha256,
            "file_name": file_name,
            "size": size,
            "organization": org,
            "inbox": str(path.parent),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        try:
            dest = await asyncio.to_thread(mover.fail_into, path, folder.failed, report, expect)
        except mover.Changed:
            log.info("file_changed", path=path, sha256=sha256, org=org, detail=_CHANGED)
            raise
        except FileNotFoundError:
            log.warning("file_vanished", path=path, sha256=sha256, org=org)
            return None
        except OSError as exc:
            log.error(
                "file_move_failed",
                path=path,
                folder=folder.failed,
                sha256=sha256,
                org=org,
                error=f"{exc.strerror or exc}",
                reason=reason,
                detail=detail,
                hint="fix the permissions of failed/; the file is checked again at the next scan",
            )
            return None
        await self._journal.mark_failed(org, sha256, dest, file_name, size, f"{reason}: {detail}")
        log.warning(
            "file_failed", path=path, dest=dest, sha256=sha256, org=org, reason=reason,
            detail=detail, **extra,
        )
        return dest
