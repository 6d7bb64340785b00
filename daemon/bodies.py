"""HTTP answers read with a bound: a server's answer is never read whole whatever its size."""

from __future__ import annotations

import aiohttp

from .errors import Transient

# An answer of Qonto's is a few kilobytes (a lifecycle with its events included):
# one far larger is not read on.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


async def read_bounded(resp: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The body, unless it is larger than `limit` (Transient: not read on)."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise Transient(
            f"HTTP {resp.status} with an answer of {declared:,} bytes, more than the "
            f"{limit:,} read", status=resp.status,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise Transient(
                f"HTTP {resp.status} with an answer of more than {limit:,} bytes",
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)
