"""The values that travel along a file's journey, and the words for what becomes of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..config import Folder
from ..identity import Identity, Seen

__all__ = ["Content", "Inspection", "Kind", "Outcome", "Pending", "Problem", "Seen"]


class Kind(StrEnum):
    """What a file's first bytes say it is (whatever its name says)."""

    PDF = "pdf"
    JPEG = "jpeg"
    PNG = "png"

    @property
    def content_type(self) -> str:
        match self:
            case Kind.PDF:
                return "application/pdf"
            case Kind.JPEG:
                return "image/jpeg"
            case Kind.PNG:
                return "image/png"


class Outcome(StrEnum):
    """What became of a file in the daemon's hands: `Books.finish` takes one of these."""

    IMPORTED = "imported"  # sent, its invoice_id recorded, the file in done/
    DUPLICATE = "duplicate"  # its content already had an invoice_id: in done/, not sent
    FAILED = "failed"  # in failed/ with its report (or beside it, too big to copy)
    KEPT = "kept"  # judged before and left in the inbox with its report: nothing new
    CHANGED = "changed"  # rewritten since it was judged: it settles and is judged again
    LEFT = "left"  # stays in the inbox for the next scan or run (a move refused, stopping...)
    GONE = "gone"  # vanished, or not a regular file: nothing to do


@dataclass(frozen=True)
class Problem:
    """Why a file can never be accepted: a short code and what a person can do."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Content:
    """A file's bytes as read once, with the stat they were read under.

    `data` holds the whole file when it is within the read limit, else only
    its first bytes (enough to tell its type); `sha256` and `size` are always
    those of the whole file.
    """

    data: bytes
    sha256: str
    identity: Identity

    @property
    def size(self) -> int:
        return self.identity.size


@dataclass(frozen=True)
class Inspection:
    """What examining a file's content found (step 3)."""

    sha256: str
    identity: Identity
    kind: Kind | None
    problem: Problem | None
    # False when the content stops short of its format's end marker: the
    # writer has not finished (or gave up half-way). Such a file is never sent.
    complete: bool = True

    @property
    def size(self) -> int:
        return self.identity.size


@dataclass(frozen=True)
class Pending:
    """A settled, examined file whose content waits for an invoice_id."""

    folder: Folder
    path: Path
    sha256: str
    file_name: str  # as sent to Qonto
    name_key: str
    identity: Identity  # of the file as judged, then as last read for sending
    content_type: str
    wire_bytes: int
    queued_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def size(self) -> int:
        return self.identity.size
