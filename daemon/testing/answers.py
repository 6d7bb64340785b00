"""How the emulator answers: JSON:API errors with a trace_id, dropped connections."""

from __future__ import annotations

import uuid

from aiohttp import web


def dump(request: web.Request) -> str:
    return "\n".join(f"{k}: {v}" for k, v in request.headers.items())


class Refusal(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def error(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    pointer: str | None = None,
) -> web.Response:
    error: dict[str, object] = {"status": str(status), "code": code, "detail": detail}
    if pointer is not None:
        error["source"] = {"pointer": pointer}
    return web.json_response(
        {"errors": [error], "trace_id": uuid.uuid4().hex}, status=status, headers=headers
    )


def drop(request: web.Request) -> web.Response:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)
