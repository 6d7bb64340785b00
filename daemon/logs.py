"""Logging: structlog configured once, JSON lines for journald, colours on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import structlog

from .redact import NOTHING, Redactor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _printable(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Make every value printable in one line: paths as text, undecodable bytes escaped.

    File names need not be UTF-8 (they arrive as surrogates); printing one
    raw would raise inside the log call.
    """
    for key, value in event_dict.items():
        if hasattr(value, "__fspath__"):
            value = str(value)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        event_dict[key] = value
    return event_dict


class _Redacting:
    """The last guard: no configured secret leaves in a log line, whatever its path."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact

    def __call__(self, _: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = self._redact(value)
            elif isinstance(value, list | tuple | dict):
                event_dict[key] = json.loads(self._redact(json.dumps(value, default=str)))
        return event_dict


def configure(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    redact: Redactor = NOTHING,
) -> None:
    """Set up structlog for the process. `fmt` is "auto", "json" or "console"."""
    stream = sys.stdout if stream is None else stream
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _printable,
        structlog.processors.format_exc_info,
    ]
    if redact:
        processors.append(_Redacting(redact))
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )

