"""The e-invoicing stage alone, Qonto faked at the client's edge."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import wait_for

from daemon.config import EinvoicingConfig, UploadConfig
from daemon.errors import AuthProblem
from daemon.flow.einvoice import Einvoicing
from daemon.flow.orgs import Org
from daemon.journal import Journal


class RefusedToken:
    """What the client raises when the OAuth refresh itself is refused (invalid_grant)."""

    def _refuse(self) -> None:
        raise AuthProblem("token endpoint refused the refresh: invalid_grant", status=401,
                          hint="make a new refresh token")

    async def authorize(self) -> None:
        self._refuse()

    async def upload(self, files):  # noqa: ANN001
        self._refuse()

    async def send_by_einvoice(self, invoice_id: str) -> None:
        self._refuse()

    async def client_invoice(self, invoice_id: str) -> dict:
        self._refuse()
        return {}

    async def einvoicing_settings(self) -> dict:
        self._refuse()
        return {}

    async def client(self, client_id: str) -> dict:
        self._refuse()
        return {}


async def test_a_refused_token_holds_e_invoicing_and_never_stops_the_daemon(tmp_path: Path,
                                                                          _logs):
    journal = await Journal.open(tmp_path / "state.sqlite3")
    stopping = asyncio.Event()
    try:
        await journal.enqueue("acme", "a" * 64, tmp_path / "x.pdf", "x.pdf", 10)
        await journal.record_imported("acme", {"a" * 64: "inv-1"},
                                      einvoice={"a" * 64: tmp_path / "x.pdf"})
        org = Org("acme", RefusedToken(), journal, UploadConfig())
        einvoicing = Einvoicing(journal=journal, orgs={"acme": org}, settings=EinvoicingConfig(),
                                upload=UploadConfig(), stopping=stopping)
        task = asyncio.create_task(einvoicing.run())
        await wait_for(lambda: any(e["event"] == "einvoice_held" for e in _logs) or task.done(),
                       what="the hold")
        assert not task.done(), task.exception()
        (held,) = [e for e in _logs if e["event"] == "einvoice_held"]
        assert held["held_for"] == "organization" and not org.paused  # uploads not paused
        (e,) = await journal.einvoices_of("acme", "a" * 64)
        assert e.state == "held"
        stopping.set()
        await asyncio.wait_for(task, 10)
    finally:
        stopping.set()
        await journal.close()


class Tracking(RefusedToken):
    """Sends are accepted; reading an invoice answers what the test says."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.reads = 0

    async def send_by_einvoice(self, invoice_id: str) -> None:
        return None

    async def einvoicing_settings(self) -> dict:
        return {"sending_status": "enabled"}

    async def client_invoice(self, invoice_id: str) -> dict:
        self.reads += 1
        raise self.error


async def test_tracking_refused_or_gone_never_pauses_uploads_and_ends(tmp_path: Path, _logs):
    """A 403 on a lifecycle read is looked at again later, never pausing the organization,
    and ends at track_days; a 410 ends the tracking at once, with an error line."""
    from daemon.errors import Rejected
    from daemon.journal import EinvoiceState

    journal = await Journal.open(tmp_path / "state.sqlite3")
    stopping = asyncio.Event()
    now = [1_800_000_000.0]
    try:
        for n, sha in enumerate(("a" * 64, "b" * 64)):
            await journal.enqueue("acme", sha, tmp_path / f"{n}.pdf", f"{n}.pdf", 10)
            await journal.record_imported("acme", {sha: f"inv-{n}"},
                                          einvoice={sha: tmp_path / f"{n}.pdf"})
        for sha in ("a" * 64, "b" * 64):
            (e,) = await journal.einvoices_of("acme", sha)
            await journal.update_einvoice(e, state=EinvoiceState.SUBMITTED, next_at=0.0,
                                          submitted_at="2027-01-15T08:00:00+00:00")
        refused = Tracking(AuthProblem("forbidden", status=403, hint="check the scopes"))
        org = Org("acme", refused, journal, UploadConfig())
        settings = EinvoicingConfig(track_days=1.0, recheck_s=60.0)
        einvoicing = Einvoicing(journal=journal, orgs={"acme": org}, settings=settings,
                                upload=UploadConfig(), stopping=stopping, clock=lambda: now[0])
        await einvoicing.run(once=True)
        assert refused.reads == 2 and not org.paused
        states = {e.invoice_id: e.state for e in await journal.einvoices_in(
            EinvoiceState.SUBMITTED, ["acme"])}
        assert states == {"inv-0": "submitted", "inv-1": "submitted"}  # looked at later
        now[0] += 2 * 86400  # past track_days, still refused: tracking ends
        await einvoicing.run(once=True)
        assert not await journal.einvoices_in(EinvoiceState.SUBMITTED, ["acme"])
        assert sum(e["event"] == "einvoice_tracking_ended" for e in _logs) == 2
        # Gone (410): ends at once, said as an error.
        gone = Tracking(Rejected("gone", status=410, code="gone", detail="the invoice is gone"))
        (e,) = await journal.einvoices_of("acme", "a" * 64)
        await journal.update_einvoice(e, state=EinvoiceState.SUBMITTED, next_at=0.0,
                                      submitted_at="2027-01-17T08:00:00+00:00")
        org2 = Org("acme", gone, journal, UploadConfig())
        again = Einvoicing(journal=journal, orgs={"acme": org2}, settings=settings,
                           upload=UploadConfig(), stopping=stopping, clock=lambda: now[0])
        await again.run(once=True)
        (stopped,) = [x for x in _logs if x["event"] == "einvoice_tracking_stopped"]
        assert stopped["status"] == 410 and stopped["log_level"] == "error"
        assert not org2.paused
    finally:
        stopping.set()
        await journal.close()
