"""One gate per organization, shared by its uploads and its e-invoices.

A 401/403 pauses the organization (with a pause that grows while refusals
go on, `auth_pause_*`); the pause ends by the clock. With `run --once` a
refusal gives up instead: what waits stays queued for the next run. Imports
that ask for an e-invoice wake the organization's e-invoicing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from ..aio import wait_event
from ..backoff import auth_pause
from ..config import UploadConfig
from ..errors import AuthProblem
from ..journal import Journal
from ..qonto import Upload
from ..timing import MONOTONIC, Clock

log = structlog.get_logger()


class Client(Protocol):
    """What the flow asks of Qonto for one organization (qonto.QontoClient)."""

    async def authorize(self) -> None: ...

    async def upload(self, files: Sequence[Upload]) -> dict[str, str]: ...

    async def send_by_einvoice(self, invoice_id: str) -> None: ...

    async def client_invoice(self, invoice_id: str) -> dict[str, Any]: ...

    async def einvoicing_settings(self) -> dict[str, Any]: ...

    async def client(self, client_id: str) -> dict[str, Any]: ...


class AuthGate:
    """Holds an organization's requests while its credentials are refused."""

    def __init__(self, initial_s: float, max_s: float, clock: Clock = MONOTONIC) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._clock = clock
        self._strikes = 0
        self._until = 0.0
        self._open = asyncio.Event()
        self._open.set()
        self._probe = asyncio.Lock()

    @property
    def paused(self) -> bool:
        # Over once its time is up, whether or not a request has looked since.
        return not self._open.is_set() and self._clock() < self._until

    def close(self) -> float | None:
        """Pause after a refusal; returns the pause, or None if already paused."""
        now = self._clock()
        if self.paused and now < self._until:
            return None
        pause_s = auth_pause(self._strikes, initial_s=self._initial_s, max_s=self._max_s)
        self._strikes += 1
        self._until = now + pause_s
        self._open.clear()
        return pause_s

    def succeeded(self) -> None:
        self._strikes = 0

    async def admit(self, stopping: asyncio.Event) -> bool | None:
        """Before a request. After a refusal, until one succeeds, one request at a time
        goes (a probe): a pause that ends never sends `concurrency` requests to be
        refused together. True: this request is the probe (`release_probe` after it);
        False: credentials not in doubt; None: the daemon stops."""
        while True:
            if self.paused and not await self.wait_open(stopping):
                return None
            if not self._strikes:
                return False
            await self._probe.acquire()
            if self._strikes and not self.paused:
                return True
            self._probe.release()

    def release_probe(self) -> None:
        self._probe.release()

    async def wait_open(self, stopping: asyncio.Event) -> bool:
        """Wait out the pause; False if the daemon is stopping meanwhile."""
        while self.paused:
            if await wait_event(stopping, self._until - self._clock()):
                return False
        self._open.set()
        return not stopping.is_set()


class Org:
    """An organization as the flow sees it: its client, its gate, its e-invoices' signal."""

    def __init__(
        self,
        key: str,
        client: Client,
        journal: Journal,
        settings: UploadConfig,
        *,
        give_up_on_auth: bool = False,
        unreachable_alert_s: float = 900.0,
        base_url: str = "",
        clock: Clock = MONOTONIC,
    ) -> None:
        self.key = key
        self.client = client
        self._journal = journal
        self._give_up_on_auth = give_up_on_auth  # `run --once`: never wait a pause out
        self._alert_s = unreachable_alert_s
        self._base_url = base_url
        self._clock = clock
        self._failing_since: float | None = None  # the first unanswered request since
        self._last_failure = 0.0
        # Failures further apart than a retry can be belong to different outages.
        self._gap_s = settings.backoff_max_s + settings.timeout_s + 60.0
        self._answered_once = False
        self.unreachable = False  # said so (qonto_unreachable) and not answered since
        self.gate = AuthGate(settings.auth_pause_initial_s, settings.auth_pause_max_s, clock)
        self.gave_up = False
        # Set when an import asks for an e-invoice: e-invoicing looks at once.
        self.einvoices_recorded = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self.gate.paused or self.gave_up

    async def answered(self) -> None:
        """Qonto answered a request (an import, or a refusal of one)."""
        self._answered_once = True
        if self._failing_since is None:
            return
        down_s = self._clock() - self._failing_since
        self._failing_since = None
        if self.unreachable:
            self.unreachable = False
            log.info("qonto_reachable", org=self.key, unreachable_for_s=round(down_s))

    async def unanswered(self, error: str) -> None:
        """A request got no answer that counts (network, 5xx, 429...). After
        `unreachable_alert_s` of these while files wait, one error line; with `run
        --once`, the files are left for the next run."""
        now = self._clock()
        if self._failing_since is None or now - self._last_failure > self._gap_s:
            self._failing_since = now  # a new outage, not the end of an old one
        self._last_failure = now
        if self.unreachable or now - self._failing_since < self._alert_s:
            return
        self.unreachable = True
        since = datetime.fromtimestamp(
            time.time() - (now - self._failing_since), UTC
        ).isoformat(timespec="seconds")
        hint = (
            f"no request to {self._base_url} has succeeded since the start: check [qonto] "
            "base_url, the network and the firewall" if not self._answered_once
            else "Qonto or the network does not answer; the files wait and are sent when it "
            "is back"
        )
        log.error("qonto_unreachable", org=self.key, since=since, last_error=error, hint=hint)
        await self._journal.note_org(self.key, unreachable_since=since)
        if self._give_up_on_auth:
            self.gave_up = True

    async def refused(self, exc: AuthProblem) -> None:
        """A 401/403: note it for `status`, then hold the organization (uploads and
        e-invoices alike)."""
        await self._journal.note_org(self.key, paused=True, reason=exc.hint, error=str(exc))
        if self._give_up_on_auth:
            if not self.gave_up:
                log.error(
                    "org_paused", org=self.key, status=exc.status, error=str(exc),
                    trace_id=exc.trace_id, hint=exc.hint, pause_s=None,
                )
            self.gave_up = True
            return
        pause_s = self.gate.close()
        if pause_s is not None:
            log.error(
                "org_paused", org=self.key, status=exc.status, error=str(exc),
                trace_id=exc.trace_id, hint=exc.hint, pause_s=pause_s,
            )
