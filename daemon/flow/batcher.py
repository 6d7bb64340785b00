"""Packing waiting files into requests that Qonto will take. Pure: no I/O.

A request holds 1 to `max_files` files, its multipart body stays within
`max_request_bytes`, and it never holds two files with the same name (as a
server could normalise it) or the same content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..config import MAX_FILES_PER_REQUEST


class Packable(Protocol):
    @property
    def sha256(self) -> str: ...

    @property
    def name_key(self) -> str: ...

    @property
    def wire_bytes(self) -> int:
        """The file's size plus its multipart framing."""
        ...


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    closing_bytes: int  # the multipart body's final boundary
    max_files: int = MAX_FILES_PER_REQUEST

    def fits_alone(self, item: Packable) -> bool:
        return self.closing_bytes + item.wire_bytes <= self.max_request_bytes


P = TypeVar("P", bound=Packable)


_LOOKAHEAD = 256


def pack(waiting: Sequence[P], limits: Limits) -> tuple[list[P], list[P]]:
    """The next request's files, in arrival order, and the files left waiting.

    First fit: the oldest file always goes in, and a later file that fits
    overtakes one that does not, so one large file never holds up the rest.
    Files that could never fit even alone are left out (inspection has
    already failed them). Only the first `_LOOKAHEAD` files are looked at: a
    backlog of thousands is packed in constant time per request.
    """
    batch: list[P] = []
    rest: list[P] = []
    size = limits.closing_bytes
    names: set[str] = set()
    contents: set[str] = set()
    for index, item in enumerate(waiting):
        if len(batch) >= limits.max_files or index >= _LOOKAHEAD:
            rest.extend(waiting[index:])
            break
        if (
            len(batch) < limits.max_files
            and item.name_key not in names
            and item.sha256 not in contents
            and size + item.wire_bytes <= limits.max_request_bytes
        ):
            batch.append(item)
            size += item.wire_bytes
            names.add(item.name_key)
            contents.add(item.sha256)
        else:
            rest.append(item)
    return batch, rest


def request_bytes(batch: Sequence[Packable], limits: Limits) -> int:
    return limits.closing_bytes + sum(item.wire_bytes for item in batch)


def is_full(batch: Sequence[Packable], rest: Sequence[Packable], limits: Limits) -> bool:
    """Nothing more could join this batch now: send it without waiting."""
    return len(batch) >= limits.max_files or bool(rest)
