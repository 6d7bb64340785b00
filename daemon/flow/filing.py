"""Step 7: putting a file away. The journal first, then the move, then the log line.

Shared by the intake (duplicates, local rejections) and the uploads
(imports, server rejections), so that every file ends the same way. The
caller tells the books what became of the file.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import structlog

from .. import leftovers, mover
from ..config import Folder
from ..errors import FileChanged, os_hint
from ..identity import Identity
from ..invoice_xml import Invoice
from ..journal import Journal

log = structlog.get_logger()
_CHANGED = "rewritten since it was checked; it settles and is checked again"


class Filing:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        # The last move error logged per file: a move retried at every scan
        # says so once, not every minute.
        self._move_errors: dict[Path, str] = {}

    async def done(
        self,
        folder: Folder,
        path: Path,
        sha256: str,
        invoice_id: str,
        *,
        expect: Identity,
        event: str = "file_imported",
        recovered: bool = False,
        einvoice: str | None = None,
        **fields: object,
    ) -> Path | None:
        """Move an imported file into done/ (its invoice_id is already committed).

        Returns where it went, or None when it was not moved: it vanished, or
        the move failed (the next scan tries again, without uploading). Raises
        FileChanged when it was rewritten since it was judged: it must be looked
        at again. With `recovered` (the journal already knew this file), a copy
        that a kill left complete in done/ is recognised instead of made twice.
        """
        org = folder.org.key
        try:
            dest = await asyncio.to_thread(
                self._move_done, path, folder.done, sha256, expect, recovered
            )
        except FileChanged:
            log.info("file_changed", path=path, sha256=sha256, org=org, detail=_CHANGED)
            raise
        except FileNotFoundError:
            self._move_errors.pop(path, None)
            log.warning("file_vanished", path=path, sha256=sha256, org=org, invoice_id=invoice_id)
            return None
        except OSError as exc:
            self._move_failed(
                exc, path, folder.done, sha256=sha256, org=org, invoice_id=invoice_id,
                detail="the invoice is imported; the file is moved at the next scan, "
                "without another upload",
            )
            return None
        self._move_errors.pop(path, None)
        await self._journal.mark_done(org, sha256, dest)
        if recovered:
            fields["recovered"] = True
        if einvoice is not None:
            fields["einvoice"] = einvoice  # asked for from a send_by_einvoice folder
        log.info(
            event, path=path, dest=dest, sha256=sha256, org=org, invoice_id=invoice_id, **fields
        )
        return dest

    @staticmethod
    def _move_done(
        path: Path, done: Path, sha256: str, expect: Identity, recovered: bool
    ) -> Path:
        if recovered:
            found = leftovers.find_copy(done, path.name, sha256, expect.size)
            if found is not None:
                _drop_original(path, expect)
                return found
        return mover.move_into(path, done, expect)

    async def failed(
        self,
        folder: Folder,
        path: Path,
        *,
        sha256: str | None,
        file_name: str,
        size: int,
        reason: str,
        detail: str,
        expect: Identity,
        recovered: bool = False,
        invoice: Invoice | None = None,
        max_copy_bytes: int | None = None,
        trace_id: str | None = None,
        **extra: object,
    ) -> Path | None:
        """Record a rejection, then move the file into failed/ with its sidecar.

        When the move fails the rejection stays recorded against the file in
        its inbox: it is not sent again, and the move is retried at the next scan.
        A file judged by its size alone has no `sha256` and no journal row.
        """
        org = folder.org.key
        error = f"{reason}: {detail}"
        if trace_id is not None:
            extra["trace_id"] = trace_id  # what Qonto's support asks for
        if sha256 is not None:
            await self._journal.mark_failed(
                org, sha256, path, file_name, size, error, invoice, trace_id
            )
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
            dest = await asyncio.to_thread(
                self._move_failed_file, path, folder.failed, report, sha256, expect, recovered,
                max_copy_bytes,
            )
        except mover.TooBigToCopy:
            # A huge file and failed/ on another filesystem: copying gigabytes to file
            # a rejection is not worth it. It stays, with its reason beside it.
            sidecar = await asyncio.to_thread(mover.write_sidecar_beside, path, report)
            log.warning(
                "file_failed", path=path, dest=path, sidecar=sidecar, sha256=sha256, org=org,
                reason=reason, detail=detail,
                hint="too big to copy into failed/ on another filesystem: it stays in the "
                "inbox with its .error.json; remove it from there",
                **extra,
            )
            return path
        except FileChanged:
            log.info("file_changed", path=path, sha256=sha256, org=org, detail=_CHANGED)
            raise
        except FileNotFoundError:
            self._move_errors.pop(path, None)
            log.warning("file_vanished", path=path, sha256=sha256, org=org)
            return None
        except OSError as exc:
            self._move_failed(
                exc, path, folder.failed, sha256=sha256, org=org, reason=reason,
                detail=f"{detail} (the file is not sent again; it is moved at the next scan)",
            )
            return None
        self._move_errors.pop(path, None)
        if sha256 is not None:
            await self._journal.mark_failed(
                org, sha256, dest, file_name, size, error, trace_id=trace_id
            )
        log.warning(
            "file_failed", path=path, dest=dest, sha256=sha256, org=org, reason=reason,
            detail=detail, **extra,
        )
        return dest

    @staticmethod
    def _move_failed_file(
        path: Path,
        failed: Path,
        report: dict[str, object],
        sha256: str | None,
        expect: Identity,
        recovered: bool,
        max_copy_bytes: int | None,
    ) -> Path:
        if recovered and sha256 is not None:
            found = leftovers.find_copy(failed, path.name, sha256, expect.size)
            if found is not None and found.with_name(found.name + mover.SIDECAR_SUFFIX).exists():
                _drop_original(path, expect)
                return found
        return mover.fail_into(path, failed, report, expect, max_copy_bytes)

    def _move_failed(
        self, exc: OSError, path: Path, folder: Path, *, detail: str, **fields: object
    ) -> None:
        error = exc.strerror or str(exc)
        first = self._move_errors.get(path) != error
        self._move_errors[path] = error
        (log.error if first else log.debug)(
            "file_move_failed", path=path, folder=folder, error=error,
            hint=os_hint(exc, folder), detail=detail, **fields,
        )


def _drop_original(path: Path, expect: Identity) -> None:
    """Remove the inbox copy of a file a kill left complete in done/ or failed/."""
    mover.check(path, expect)
    path.unlink(missing_ok=True)
