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
