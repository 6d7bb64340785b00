"""Parsing untrusted PDFs where a slow or greedy file can be stopped: worker processes.

A crafted PDF can keep pypdf busy for minutes and take gigabytes. A thread
could never be stopped, so each parse runs in a worker process of its own
small pool, with an address-space limit set when the worker starts and a time
limit enforced from here: a worker past either is killed and replaced. The
daemon never waits for a parse to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import structlog

from .aio import wait_first
from .invoice_xml import Invoice, read_invoice

log = structlog.get_logger()
T = TypeVar("T")


_START_TIMEOUT_S = 60.0


class ParseFailed(Exception):
    """The PDF could not be read within the limits; the message says why."""


class _Died(Exception):
    """The parser process ended during a parse: not yet the PDF's fault."""


class ParserUnavailable(Exception):
    """No parser process could be started: not the file's fault, it must wait."""


class _Collect(logging.Handler):
    """In the worker: what pypdf says is kept and sent back, never printed on stderr."""

    records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < 20:
            with contextlib.suppress(Exception):
                self.records.append((record.levelno, record.name, record.getMessage()[:500]))


def _start_worker(limit_bytes: int, daemon_pid: int, limit: str, mute: bool) -> None:
    """In the worker, before any parse: memory limit, logging, signals, and a leash."""
    import resource
    import threading

    # A daemon killed outright (SIGKILL, a crash) must not leave parsers behind.
    threading.Thread(target=_exit_with, args=(daemon_pid,), daemon=True).start()

    if limit_bytes > 0:
        # A parse that wants more fails with MemoryError instead of growing.
        which = getattr(resource, limit)
        resource.setrlimit(which, (limit_bytes, limit_bytes))
    if mute:
        # A native library's crash report (pages of registers) is no log line:
        # the daemon says what became of the file instead.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    # The daemon stops its workers itself; a Ctrl-C on the terminal is not for them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [_Collect()]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


def _exit_with(pid: int) -> None:
    """In the worker: end this process as soon as the daemon's process has ended."""
    import select
    import time

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
        os._exit(0)
    while True:  # no pidfd here: look once a second
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(1.0)


def _parse(
    data: bytes, check_xsd: bool, keep_xml: bool
) -> tuple[Invoice, list[tuple[int, str, str]]]:
    _Collect.records = []
    return read_invoice(data, check_xsd, keep_xml), _Collect.records


def warm_up() -> int:
    """Import the parsing stack and load the XSD schemas once, so the first real
    parse is not charged for them (a backlog's first request waits on it)."""
    import facturx  # noqa: F401
    import pypdf  # noqa: F401
    from facturx.facturx import FACTURX_LEVEL2xsd

    from .invoice_xml import _schema

    for profile in FACTURX_LEVEL2xsd:
        _schema(profile)

    return os.getpid()


def _running(pid: int | None) -> bool:
    """The process exists and is not a zombie (its parent, the forkserver, reaps it)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True  # no /proc to ask: the pool finds out when it is used


class Worker:
    """One worker process, started on first use and replaced after a kill.

    `limit` names the resource limit that bounds its memory: RLIMIT_AS for the
    PDF parsers; RLIMIT_DATA where a library reserves more address space than it
    uses (Saxon reserves 32 GB at start). `mute` sends the process's stderr to
    /dev/null.
    """

    def __init__(
        self,
        memory_bytes: int,
        prepare: Callable[[], int],
        *,
        limit: str = "RLIMIT_AS",
        mute: bool = False,
        name: str = "parser",
    ) -> None:
        self._memory_bytes = memory_bytes
        self._prepare = prepare
        self._limit = limit
        self._mute = mute
        self.name = name
        self._pool: ProcessPoolExecutor | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    async def start(self) -> None:
        """Start the process (once, after a kill, and when it stopped while idle) and
        import the parsing stack there."""
        if self._pool is not None:
            if _running(self._pid):
                return
            # It stopped while idle (the OOM killer, an administrator): the file it
            # would have been handed is not to blame; a fresh process reads it.
            if self.name == "parser":
                log.warning("parser_restarted", pid=self._pid, reason="the process had stopped")
            else:
                log.warning("rules_worker_restarted", pid=self._pid,
                            reason="the process had stopped")
            self.kill()
        # forkserver: never fork the daemon itself (threads, sockets, SQLite).
        pool = self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_start_worker,
            initargs=(self._memory_bytes, os.getpid(), self._limit, self._mute),
        )
        # Starting a process (the first time, the forkserver too) blocks for tens of
        # milliseconds: not on the event loop, which has a backlog to list meanwhile.
        try:
            started = await asyncio.to_thread(pool.submit, self._prepare)
            pid = await asyncio.wrap_future(started)
        except BrokenProcessPool:
            raise
        except Exception as exc:
            # Shut down by kill() meanwhile (RuntimeError), or the forkserver could not
            # fork (EOFError: a process limit, no memory): no file's fault.
            raise BrokenProcessPool(f"{type(exc).__name__}: {exc}") from None
        if self._pool is not pool:  # killed meanwhile: that process is not ours any more
            raise BrokenProcessPool(f"the {self.name} was stopped while it started")
        self._pid = pid
        if self.name == "parser":
            log.debug("parser_started", pid=pid)
        else:
            log.debug("rules_worker_started", pid=pid)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in the process (a module-level function: it is sent by name)."""
        assert self._pool is not None, "start() first"
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def parse(self, data: bytes, check_xsd: bool, keep_xml: bool = False) -> Invoice:
        assert self._pool is not None, "start() first"
        invoice, records = await asyncio.wrap_future(
            self._pool.submit(_parse, data, check_xsd, keep_xml)
        )
        for level, logger, message in records:  # what pypdf said, as our own log lines
            emit = log.warning if level >= logging.ERROR else log.debug
            emit("library_message", logger=logger, message=message)
        return invoice

    def kill(self) -> None:
        pool, pid = self._pool, self._pid
        self._pool = self._pid = None
        if pid is not None:
            with contextlib.suppress(OSError):  # gone already (and its pid maybe reused)
                os.kill(pid, signal.SIGKILL)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class ParserPool:
    """`workers` parsers; `parse()` waits for a free one, then at most `timeout_s`."""

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        memory_mb: int,
        *,
        prepare: Callable[[], int] = warm_up,
    ) -> None:
        """`prepare` runs in each new worker before its first parse and returns its
        pid (a module-level function: it is sent to the worker by name)."""
        self._timeout_s = timeout_s
        self._workers = [Worker(memory_mb * 1024 * 1024, prepare) for _ in range(workers)]
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def parse(
        self, data: bytes, *, check_xsd: bool = True, keep_xml: bool = False
    ) -> Invoice:
        """The invoice XML of a PDF; ParseFailed when it cannot be read within the limits.

        A parser that dies during a parse (killed from outside, the OOM killer) is
        replaced and the PDF read again by the fresh one: only a second death is
        laid at the PDF's door.
        """
        try:
            return await self._parse_once(data, check_xsd, keep_xml)
        except _Died:
            log.warning("parser_restarted", reason="the process stopped during a parse")
        try:
            return await self._parse_once(data, check_xsd, keep_xml)
        except _Died:
            raise ParseFailed(
                "the PDF parser stopped twice while reading this PDF (out of memory, "
                "or crashed)"
            ) from None

    async def _parse_once(self, data: bytes, check_xsd: bool, keep_xml: bool) -> Invoice:
        worker = await self._idle.get()
        try:
            # Starting a worker (a second or so on a busy machine) is not the file's time.
            try:
                async with asyncio.timeout(_START_TIMEOUT_S):
                    await worker.start()
            except (TimeoutError, BrokenProcessPool, OSError) as exc:
                worker.kill()
                raise ParserUnavailable(
                    f"no PDF parser process could be started: {type(exc).__name__} {exc}"
                ) from None
            async with asyncio.timeout(self._timeout_s):
                return await worker.parse(data, check_xsd, keep_xml)
        except TimeoutError:
            worker.kill()
            raise ParseFailed(
                f"reading the PDF took longer than {self._timeout_s:g} s "
                "([validation] parse_timeout_seconds)"
            ) from None
        except BrokenProcessPool:
            worker.kill()
            raise _Died from None
        except MemoryError:
            worker.kill()  # a fresh worker for the next file
            raise ParseFailed("reading the PDF needs more memory than allowed") from None
        except asyncio.CancelledError:
            worker.kill()  # stopping: never wait for a parse
            raise
        except (ParseFailed, ParserUnavailable, _Died):
            raise
        except Exception as exc:  # what pypdf says about a PDF it cannot read
            problem = f"the PDF cannot be read: {type(exc).__name__}: {exc}"
        finally:
            self._idle.put_nowait(worker)
        # Raised here, not in the handler: an exception raised there would keep this
        # frame (and the PDF's bytes) in a reference cycle until the next full GC.
        raise ParseFailed(problem) from None

    async def read(
        self, data: bytes, stopping: asyncio.Event, *, keep_xml: bool = False
    ) -> Invoice | str | None:
        """The invoice XML of a PDF, why it cannot be read (a str), or None when the
        daemon stops first (the parse is then killed, never waited for).

        Raises ParserUnavailable. A failure is returned, not raised: raised, it would
        tie this frame, and the PDF's bytes, to the parse's task in a reference cycle
        that only a full garbage collection breaks (a backlog of unreadable scans
        would pile up in memory meanwhile).
        """
        parse = asyncio.ensure_future(self.parse(data, keep_xml=keep_xml))
        await wait_first(parse, stopping)
        if not parse.done():
            parse.cancel()
            with contextlib.suppress(asyncio.CancelledError, ParseFailed, ParserUnavailable):
                await parse
            return None
        failed = parse.exception()
        if failed is None:
            return parse.result()
        if isinstance(failed, ParseFailed):
            return str(failed)
        if isinstance(failed, ParserUnavailable):
            raise ParserUnavailable(str(failed)) from None
        raise failed

    async def warm(self) -> None:
        """Start every worker at once (at start-up), not when the first PDF waits for one."""

        async def one() -> None:
            worker = await self._idle.get()
            try:
                async with asyncio.timeout(_START_TIMEOUT_S):
                    await worker.start()
            except (TimeoutError, BrokenProcessPool, OSError):
                worker.kill()  # the first parse tries again, and says why if it cannot
            finally:
                self._idle.put_nowait(worker)

        await asyncio.gather(*(one() for _ in self._workers))

    def pids(self) -> list[int]:
        """The worker processes started (for tests and diagnostics)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
