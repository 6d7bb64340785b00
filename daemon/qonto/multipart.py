"""The multipart body of a bulk request: names as Qonto will know them, sizes exactly.

Pure but for aiohttp's payload classes: no I/O.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

FIELD = "client_invoices"
_BOUNDARY_LEN = 32  # aiohttp's own: uuid4().hex
_SLICE_BYTES = 1 << 16


@dataclass(frozen=True)
class Upload:
    file_name: str  # as made by upload_name()
    data: bytes
    content_type: str


def upload_name(name: str) -> str:
    """The name Qonto will know a file by: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def escaped(name: str) -> str:
    """How browsers put a name in Content-Disposition (WHATWG form encoding)."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def name_key(name: str) -> str:
    """Names that a server could take for the same one.

    Two names are one on the wire when they escape alike (`q"a.pdf` and
    `q%22a.pdf`) or normalise alike (Unicode NFC): such files never share a request.
    """
    return unicodedata.normalize("NFC", escaped(name))

class _Slices(payload.Payload):
    """A file's bytes written in slices of a view: the event loop is never held by
    a 5 MB write, and no copy is made (aiohttp's BytesIOPayload copies the buffer)."""

    _value: bytes
    _autoclose = True  # in memory: nothing to close

    def __init__(self, value: bytes, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._value

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        for start in range(0, len(view), _SLICE_BYTES):
            await writer.write(view[start : start + _SLICE_BYTES])


def _part(file_name: str, data: bytes, content_type: str) -> payload.Payload:
    part = _Slices(data, content_type=content_type)
    part.set_content_disposition(
        "form-data", quote_fields=False, name=FIELD, filename=escaped(file_name)
    )
    return part


def build_body(files: Sequence[Upload], boundary: str | None = None) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data", boundary=boundary)
    for f in files:
        writer.append_payload(_part(f.file_name, f.data, f.content_type))
    return writer


def part_overhead(file_name: str, content_type: str) -> int:
    """Bytes a file adds to the request body beyond its own content."""
    writer = aiohttp.MultipartWriter("form-data", boundary="b" * _BOUNDARY_LEN)
    empty = writer.size
    writer.append_payload(_part(file_name, b"", content_type))
    size = writer.size
    assert empty is not None and size is not None
    return size - empty


def body_size(parts: Iterable[tuple[str, str, int]]) -> int:
    """The exact multipart body size for (file_name, content_type, size) parts."""
    closing = len(b"--") + _BOUNDARY_LEN + len(b"--\r\n")
    return closing + sum(part_overhead(n, t) + size for n, t, size in parts)

