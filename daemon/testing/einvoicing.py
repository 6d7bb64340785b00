"""The emulator's e-invoicing: send_by_einvoice and an invoice's lifecycle as Qonto reports it."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from .answers import drop

if TYPE_CHECKING:
    from .emulator import Faults


@dataclass(frozen=True)
class Invoice:
    login: str
    sha256: str
    invoice_id: str
    file_name: str


# E-invoicing: an invoice's lifecycle as Qonto's platform reports it, one code
# per `lifecycle_step_s` after it was sent (each then stays).
DEFAULT_LIFECYCLE = (200, 201, 202)
UNREACHABLE_MARKER = b"UNREACHABLE"
_EINVOICING_STATUS = {200: "submitted", 201: "issued", 202: "received", 210: "refused",
                      212: "paid", 213: "rejected"}


@dataclass
class Sent:
    """An invoice sent by e-invoice: when, and what its lifecycle will be."""

    at: float  # the event loop's clock
    wall: float  # the same instant, for the events' dates
    codes: tuple[int, ...]
    calls: int = 1


class EinvoicingRoutes:
    """The e-invoicing endpoints, part of the Emulator (which holds their state)."""

    invoices: dict[tuple[str, str], Invoice]
    einvoice_faults: Faults
    einvoice_requests: int
    sent: dict[str, Sent]
    contents: dict[str, bytes]
    lifecycle_step_s: float
    lifecycle: tuple[int, ...]
    lifecycles: dict[str, tuple[int, ...]]
    _rng: random.Random

    if TYPE_CHECKING:
        def _authenticate(self, header: str) -> str | None: ...

        def _fail(
            self, request: web.Request, status: int, code: str, detail: str,
            headers: dict[str, str] | None = None, *, pointer: str | None = None,
        ) -> web.Response: ...

        def _server_error(self, request: web.Request) -> web.Response: ...


    def invoice_by_id(self, invoice_id: str) -> Invoice | None:
        return next((i for i in self.invoices.values() if i.invoice_id == invoice_id), None)

    def codes_now(self, invoice_id: str) -> list[int]:
        sent = self.sent.get(invoice_id)
        if sent is None:
            return []
        elapsed = asyncio.get_running_loop().time() - sent.at
        return list(sent.codes[: 1 + int(elapsed / self.lifecycle_step_s)])

    async def _einvoice_gate(
        self, request: web.Request
    ) -> tuple[web.StreamResponse | None, Invoice | None, float]:
        """Authentication, faults and the invoice: an answer to give now, or the invoice."""
        self.einvoice_requests += 1
        faults = self.einvoice_faults
        if faults.held is not None:
            await faults.held.wait()
        login = self._authenticate(request.headers.get("Authorization", ""))
        if login is None or faults.unauthorized:
            return self._fail(request, 401, "unauthorized",
                              "The authentication credentials are invalid."), None, 1.0
        if login in faults.forbidden_logins:
            return self._fail(request, 403, "forbidden",
                              "E-invoicing is not available for this organization."), None, 1.0
        if self.einvoice_requests <= faults.server_error_first:
            return self._server_error(request), None, 1.0
        roll = self._rng.random()
        if roll < faults.rate_limited:
            return self._fail(request, 429, "too_many_requests", "Rate limit exceeded."), None, 1
        roll -= faults.rate_limited
        if roll < faults.server_error:
            return self._server_error(request), None, 1.0
        roll -= faults.server_error
        if roll < faults.drop_before:
            return drop(request), None, 1.0
        roll -= faults.drop_before
        invoice = self.invoice_by_id(request.match_info["id"])
        if invoice is None or invoice.login != login:
            return self._fail(request, 404, "not_found", "Client invoice not found."), None, 1.0
        return None, invoice, roll

    async def _send_by_einvoice(self, request: web.Request) -> web.StreamResponse:
        answer, invoice, roll = await self._einvoice_gate(request)
        if answer is not None:
            return answer
        assert invoice is not None
        if _unreachable(self.contents.get(invoice.invoice_id, b"")):
            return self._fail(
                request, 422, "client_not_reachable",
                "The client of this invoice is not reachable on the e-invoicing network.",
            )
        sent = self.sent.get(invoice.invoice_id)
        if sent is None:  # the first call submits; later ones change nothing
            codes = self.lifecycles.get(invoice.invoice_id, self.lifecycle)
            self.sent[invoice.invoice_id] = Sent(
                asyncio.get_running_loop().time(), time.time(), codes
            )
        else:
            sent.calls += 1
        if roll < self.einvoice_faults.drop_after:
            return drop(request)
        return web.Response(status=204)

    async def _client_invoice(self, request: web.Request) -> web.StreamResponse:
        answer, invoice, roll = await self._einvoice_gate(request)
        if answer is not None:
            return answer
        assert invoice is not None
        codes = self.codes_now(invoice.invoice_id)
        if roll < self.einvoice_faults.drop_after:
            return drop(request)
        sent = self.sent.get(invoice.invoice_id)
        wall = sent.wall if sent is not None else time.time()
        return web.json_response({"client_invoice": {
            "id": invoice.invoice_id,
            "status": "unpaid",
            "einvoicing_status": _EINVOICING_STATUS.get(codes[-1], "in_progress")
            if codes else None,
            "einvoicing_lifecycle_events": [
                {"status_code": code, "created_at": datetime.fromtimestamp(
                    wall + n * self.lifecycle_step_s, UTC).isoformat(timespec="seconds")}
                for n, code in enumerate(codes)
            ],
        }})


def _unreachable(data: bytes) -> bool:
    """Whether a Factur-X file names a buyer the emulator deems unreachable."""
    if not data.startswith(b"%PDF"):
        return False
    try:
        from facturx import get_xml_from_pdf

        _, xml = get_xml_from_pdf(data, check_xsd=False)
    except Exception:  # not Factur-X: nothing to reach
        return False
    return bool(xml) and UNREACHABLE_MARKER in xml
