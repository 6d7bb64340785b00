"""Logging: structlog configured once, JSON lines for journald, colours on a terminal."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from enum import StrEnum
from typing import Any, TextIO

import structlog

from .redact import NOTHING, Redactor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_METHODS = {**_LEVELS, "exception": logging.ERROR, "critical": logging.CRITICAL}


class _Threshold:
    """The level below which lines are dropped; SIGUSR2 moves it to debug and back.

    A processor, not structlog's filtering logger: loggers cached at first use
    would keep the level they were made with.
    """

    def __init__(self) -> None:
        self.configured = self.level = logging.INFO

    def __call__(self, _: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        below = _METHODS.get(method, logging.INFO) < self.level
        if below and event_dict.get("event") != "log_level_changed":
            raise structlog.DropEvent
        return event_dict


_threshold = _Threshold()


def toggle_debug() -> str:
    """Debug lines on, or back to the configured level; the level now in force."""
    debug = _threshold.level != logging.DEBUG
    _threshold.level = logging.DEBUG if debug else _threshold.configured
    return logging.getLevelName(_threshold.level).lower()


def printable(value: str) -> str:
    """Valid UTF-8 for any file name: bytes that are not UTF-8 show as \\xNN.

    File names need not be UTF-8 (they arrive as surrogates); printing one
    raw would raise.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _printable(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Make every value printable: paths as text, undecodable bytes escaped."""
    for key, value in event_dict.items():
        if hasattr(value, "__fspath__"):
            value = str(value)
        if isinstance(value, str):
            value = printable(value)
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


class _LibraryRecords(logging.Handler):
    """Records of the libraries we use (pypdf, factur-x, asyncio...) as our own log lines.

    Left alone they would print raw text into the daemon's JSON log. What
    pypdf says about a malformed PDF is not something a person must act on,
    so below ERROR it becomes debug; ERROR and above, a warning.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's own bad format string
            message = str(record.msg)
        log = structlog.get_logger()
        emit = log.warning if record.levelno >= logging.ERROR else log.debug
        emit("library_message", logger=record.name, message=message[:2000])


def _route_library_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_LibraryRecords())
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn() becomes a record of "py.warnings"


def _route_uncaught() -> None:
    """What Python would print as a raw traceback on stderr (an exception in a thread,
    one ignored in a destructor) becomes a log line like the others."""

    def in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        structlog.get_logger().warning(
            "library_message", logger="threading",
            message=f"{getattr(args.thread, 'name', '?')}: {args.exc_type.__name__}: "
            f"{args.exc_value}"[:2000],
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
            if args.exc_value is not None else None,
        )

    def unraisable(hook: sys.UnraisableHookArgs) -> None:
        structlog.get_logger().debug(
            "library_message", logger="unraisable",
            message=f"{hook.err_msg or 'Exception ignored'}: "
            f"{hook.exc_type.__name__}: {hook.exc_value}"[:2000],
        )

    threading.excepthook = in_thread
    sys.unraisablehook = unraisable


class LogFormat(StrEnum):
    """[log] format: JSON lines for journald, or lines for a person at a terminal."""

    AUTO = "auto"  # console on a terminal, JSON otherwise
    JSON = "json"
    CONSOLE = "console"


def configure(
    fmt: str = LogFormat.AUTO,
    level: str = "info",
    stream: TextIO | None = None,
    redact: Redactor = NOTHING,
) -> None:
    """Set up structlog for the process."""
    stream = sys.stdout if stream is None else stream
    as_json: bool
    match LogFormat(fmt):
        case LogFormat.AUTO:
            as_json = not stream.isatty()
        case LogFormat.JSON:
            as_json = True
        case LogFormat.CONSOLE:
            as_json = False
    _threshold.configured = _threshold.level = _LEVELS[level]
    processors: list[Any] = [
        _threshold,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _printable,
        # An exception is a structured field of its JSON line, never raw text.
        structlog.processors.dict_tracebacks if as_json
        else structlog.processors.format_exc_info,
    ]
    if redact:
        processors.append(_Redacting(redact))
    if as_json:
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    _route_library_logging()
    _route_uncaught()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def silence() -> None:
    """No log lines at all: for the commands, whose output is their answer (unless
    the process has configured logging already, as a test does)."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[_drop], logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def _drop(_: Any, __: str, ___: MutableMapping[str, Any]) -> Mapping[str, Any]:
    raise structlog.DropEvent
