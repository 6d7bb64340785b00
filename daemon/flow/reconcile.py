"""At start-up: make the journal and the folders agree after a crash.

Batches that were in flight are queued again (Qonto answers a re-sent
content with its existing invoice_id); files a kill left complete in done/
are recorded there; temporary files of interrupted moves are removed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import structlog

from .. import leftovers
from ..config import Folder
from ..journal import Journal, State

log = structlog.get_logger()


async def reconcile(journal: Journal, folders: Sequence[Folder], stopping: asyncio.Event) -> None:
    requeued = await journal.requeue_interrupted()
    marked = removed = 0
    by_inbox = {f.inbox: f for f in folders}
    for each in folders:
        for directory in (each.done, each.failed):
            removed += await asyncio.to_thread(leftovers.clean_temporaries, directory)
    for record in await journal.in_state(State.IMPORTED):
        if stopping.is_set():
            return  # a stop during start-up: what is left is done at the next start
        folder = by_inbox.get(record.path.parent)
        if folder is None or await asyncio.to_thread(os.path.lexists, record.path):
            continue  # still in its inbox: the scan finds it and moves it without uploading
        found = await _find_copy(
            folder.done, record.path.name, record.sha256, record.size, stopping
        )
        if found is not None:
            await journal.mark_done(record.org, record.sha256, found)
            marked += 1
    if requeued or marked or removed:
        log.info(
            "journal_reconciled", requeued=requeued, marked_done=marked,
            temporaries_removed=removed,
        )


async def _find_copy(
    directory: Path, name: str, sha256: str, size: int, stopping: asyncio.Event
) -> Path | None:
    """leftovers.find_copy, one file per thread call, so that a stop is heard between files."""
    candidates = await asyncio.to_thread(leftovers.copy_candidates, directory, name, size)
    for candidate in candidates:
        if stopping.is_set():
            return None
        log.debug("copy_hashing", path=candidate, looking_for=name)
        if await asyncio.to_thread(leftovers.sha256_of, candidate) == sha256:
            return candidate
    return None
