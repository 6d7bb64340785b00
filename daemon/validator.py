"""The business rules, checked in worker processes of their own.

Saxon holds hundreds of megabytes once the rules are compiled, and a check
cannot be interrupted from inside (it holds the GIL): each worker is a process,
started when the first invoice needs it, stopped after `idle_s` without work,
killed and replaced past the time limit. Its memory is bounded with
RLIMIT_DATA: Saxon reserves 32 GB of address space at start, so RLIMIT_AS
would stop it from starting at all.

Whatever goes wrong with the checker (a time-out, a crash, a worker killed
from outside twice) makes the report `unknown`, never a rule failure: the
invoice is not to blame for the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool

import structlog

from . import schematron
from .aio import wait_first
from .parsers import Worker
from .rulesets import stylesheets
from .schematron import Report

log = structlog.get_logger()

_START_TIMEOUT_S = 120.0  # starting Saxon and compiling the rules on a loaded machine
Check = Callable[[bytes, "str | None", "str | None"], Report]


class RulesPool:
    """`workers` rule checkers; `check()` waits for a free one, then at most `timeout_s`."""

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        memory_mb: int,
        idle_s: float,
        *,
        prepare: Callable[[], int] = schematron.warm_up,
        check: Check = schematron.check,
    ) -> None:
        """`prepare` and `check` run in the workers (module-level functions: they are
        sent by name); tests pass slower ones."""
        self._timeout_s = timeout_s
        self._idle_s = idle_s
        self._check = check
        self._workers = [
            Worker(memory_mb * 1024 * 1024, prepare, limit="RLIMIT_DATA", mute=True,
                   name="rules_worker")
            for _ in range(workers)
        ]
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)
        self._busy = 0
        self._stop_timer: asyncio.TimerHandle | None = None

    async def check(
        self, xml: bytes, profile: str | None, seller_country: str | None,
        stopping: asyncio.Event,
    ) -> Report | None:
        """The rules' report on this Factur-X XML; None when the daemon stops first."""
        if (large := schematron.too_large(xml)) is not None:
            return large  # not worth a worker's time, nor the copy to it
        task = asyncio.ensure_future(self._check_once_or_twice(xml, profile, seller_country))
        await wait_first(task, stopping)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        return task.result()

    async def _check_once_or_twice(
        self, xml: bytes, profile: str | None, seller_country: str | None
    ) -> Report:
        report = await self._check_on_a_worker(xml, profile, seller_country)
        if report is not _DIED:
            return report
        # The worker died under it: killed from outside, or the OOM killer. A fresh
        # one judges the invoice; only a second death is laid at the invoice's door.
        log.warning("rules_worker_restarted", reason="the process stopped during a check")
        report = await self._check_on_a_worker(xml, profile, seller_country)
        if report is not _DIED:
            return report
        return Report(unknown=(
            "the business-rule checker stopped twice on this invoice (out of memory "
            "([validation] rules_memory_mb), or crashed)"
        ))

    async def _check_on_a_worker(
        self, xml: bytes, profile: str | None, seller_country: str | None
    ) -> Report:
        worker = await self._idle.get()
        self._busy += 1
        try:
            sheets = tuple(str(s.path) for s in stylesheets(profile, seller_country))
            # Starting Saxon and compiling the rules is not the invoice's time.
            try:
                async with asyncio.timeout(_START_TIMEOUT_S):
                    await worker.start()
                    await worker.call(schematron.prepare, sheets)
            except Exception as exc:  # a time-out, a process limit, an artefact Saxon refuses
                worker.kill()
                return Report(unknown=(
                    "no business-rule checker could be started: "
                    f"{type(exc).__name__} {exc}".strip()
                ))
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await worker.call(self._check, xml, profile, seller_country)
            except TimeoutError:
                worker.kill()
                return Report(unknown=(
                    f"checking the business rules took longer than {self._timeout_s:g} s "
                    "([validation] rules_timeout_seconds)"
                ))
            except BrokenProcessPool:
                worker.kill()
                return _DIED
            except Exception as exc:  # the checker's own bug: still not the invoice's fault
                return Report(unknown=f"the business-rule check failed: {type(exc).__name__} {exc}")
        except asyncio.CancelledError:
            worker.kill()  # stopping: never wait for a check
            raise
        finally:
            self._busy -= 1
            self._idle.put_nowait(worker)
            self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        """Stop the workers `idle_s` after the last check, unless another comes first."""
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        self._stop_timer = asyncio.get_running_loop().call_later(self._idle_s, self._stop_idle)

    def _stop_idle(self) -> None:
        self._stop_timer = None
        if self._busy or not self.pids():
            return
        log.debug("rules_workers_stopped", idle_s=self._idle_s, pids=self.pids())
        for worker in self._workers:
            worker.kill()

    def pids(self) -> list[int]:
        """The worker processes running (for tests and diagnostics)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def close(self) -> None:
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        for worker in self._workers:
            worker.kill()


# A worker that died during a check (a private marker, never returned to callers).
_DIED = Report(unknown="the business-rule checker stopped")
