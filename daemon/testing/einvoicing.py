"""The emulator's e-invoicing: send_by_einvoice and an invoice's lifecycle as Qonto reports it."""

from __future__ import annotations

import asyncio
import hashlib
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
# Why a buyer refused (210) or the platform rejected (213), as Qonto passes it on.
REASONS = {
    210: ("REF_CT", "Le destinataire conteste le montant facturé."),
    213: ("REJ_SEMAN", "Le numéro SIREN du vendeur est absent (BR-FR-10)."),
}


def status_of(codes: list[int]) -> str:
    """`einvoicing_status` as Qonto derives it from where the lifecycle stands."""
    if not codes:
        return "pending"
    last = codes[-1]
    if last == 213:
        return "submission_failed"
    if last == 210:
        return "declined"
    if last in (205, 206, 209, 211, 212):
        return "approved"
    return "submitted"


@dataclass
class Sent:
    """An invoice sent by e-invoice: when, and what its lifecycle will be."""

    at: float  # the event loop's clock
    wall: float  # the same instant, for the events' dates
    codes: tuple[int, ...]
    calls: int = 1


@dataclass
class Client:
    """A client of an organization, as GET /v2/clients/{id} shows it."""

    id: str
    name: str
    e_invoicing_reachable: bool


class EinvoicingRoutes:
    """The e-invoicing endpoints, part of the Emulator (which holds their state).

    State a test sets: `sending_status[login]` (e-invoicing settings, "enabled"
    by default), `clients[id].e_invoicing_reachable`, `restricted_reads` (logins
    whose key may not read settings nor clients: 403), `lifecycles[invoice_id]`
    and `einvoicing_statuses[invoice_id]` (an `einvoicing_status` that the codes would not
    give, such as a failed submission without a 213 event).
    """

    invoices: dict[tuple[str, str], Invoice]
    einvoice_faults: Faults
    einvoice_requests: int
    sent: dict[str, Sent]
    contents: dict[str, bytes]
    lifecycle_step_s: float
    lifecycle: tuple[int, ...]
    lifecycles: dict[str, tuple[int, ...]]
    einvoicing_statuses: dict[str, str]
    einvoicing_status_always: str | None  # for every invoice sent, whatever its codes
    sending_status: dict[str, str]
    clients: dict[str, Client]
    client_of: dict[str, str]  # invoice_id -> client id
    restricted_reads: set[str]
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

    def add_client_of(self, invoice_id: str, data: bytes) -> None:
        """The invoice's client, from its buyer (a plain file: an unnamed client)."""
        buyer = _buyer(data) or "Client sans nom"
        client_id = "cl-" + hashlib.sha1(buyer.encode()).hexdigest()[:12]
        if client_id not in self.clients:
            self.clients[client_id] = Client(
                client_id, buyer, UNREACHABLE_MARKER.decode() not in buyer
            )
        self.client_of[invoice_id] = client_id

    async def _caller(self, request: web.Request) -> tuple[web.StreamResponse | None, str, float]:
        """Authentication and faults: an answer to give now, or the login and a roll."""
        self.einvoice_requests += 1
        faults = self.einvoice_faults
        if faults.held is not None:
            await faults.held.wait()
        login = self._authenticate(request.headers.get("Authorization", ""))
        if login is None or faults.unauthorized:
            return self._fail(request, 401, "unauthorized",
                              "The authentication credentials are invalid."), "", 1.0
        if login in faults.forbidden_logins:
            return self._fail(request, 403, "forbidden",
                              "E-invoicing is not available for this organization."), "", 1.0
        if self.einvoice_requests <= faults.server_error_first:
            return self._server_error(request), "", 1.0
        roll = self._rng.random()
        if roll < faults.rate_limited:
            return self._fail(request, 429, "too_many_requests", "Rate limit exceeded."), "", 1
        roll -= faults.rate_limited
        if roll < faults.server_error:
            return self._server_error(request), "", 1.0
        roll -= faults.server_error
        if roll < faults.drop_before:
            return drop(request), "", 1.0
        roll -= faults.drop_before
        return None, login, roll

    async def _einvoice_gate(
        self, request: web.Request
    ) -> tuple[web.StreamResponse | None, Invoice | None, float]:
        """Authentication, faults and the invoice: an answer to give now, or the invoice."""
        answer, login, roll = await self._caller(request)
        if answer is not None:
            return answer, None, roll
        invoice = self.invoice_by_id(request.match_info["id"])
        if invoice is None or invoice.login != login:
            return self._fail(request, 404, "not_found", "Client invoice not found."), None, 1.0
        return None, invoice, roll

    async def _send_by_einvoice(self, request: web.Request) -> web.StreamResponse:
        answer, invoice, roll = await self._einvoice_gate(request)
        if answer is not None:
            return answer
        assert invoice is not None
        if self.sending_status.get(invoice.login, "enabled") != "enabled":
            return self._fail(request, 403, "einvoicing_not_activated",
                              "E-invoicing is not activated for this organization.")
        client = self.clients.get(self.client_of.get(invoice.invoice_id, ""))
        if client is not None and not client.e_invoicing_reachable:
            return self._fail(
                request, 412, "recipient_not_reachable_on_einvoicing",
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
        status = (
            self.einvoicing_statuses.get(invoice.invoice_id, self.einvoicing_status_always)
            if sent else None
        )
        client = self.clients.get(self.client_of.get(invoice.invoice_id, ""))
        return web.json_response({"client_invoice": {
            "id": invoice.invoice_id,
            "status": "unpaid",
            "client": {"id": client.id, "name": client.name} if client else None,
            "einvoicing_status": status or status_of(codes),
            "einvoicing_lifecycle_events": [
                {
                    "status_code": str(code),
                    "timestamp": datetime.fromtimestamp(
                        wall + n * self.lifecycle_step_s, UTC).isoformat(timespec="milliseconds"),
                    "reason": REASONS[code][0] if code in REASONS else None,
                    "reason_message": REASONS[code][1] if code in REASONS else None,
                }
                for n, code in enumerate(codes)
            ],
        }})

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        answer, login, _ = await self._caller(request)
        if answer is not None:
            return answer
        if login in self.restricted_reads:
            return self._fail(request, 403, "forbidden", "This key may not read this resource.")
        return web.json_response({
            "sending_status": self.sending_status.get(login, "enabled"),
            "receiving_status": "enabled",
        })

    async def _client(self, request: web.Request) -> web.StreamResponse:
        answer, login, _ = await self._caller(request)
        if answer is not None:
            return answer
        if login in self.restricted_reads:
            return self._fail(request, 403, "forbidden", "This key may not read this resource.")
        client = self.clients.get(request.match_info["id"])
        if client is None:
            return self._fail(request, 404, "not_found", "Client not found.")
        return web.json_response({"client": {
            "id": client.id, "name": client.name,
            "e_invoicing_reachable": client.e_invoicing_reachable,
        }})


def _buyer(data: bytes) -> str | None:
    """The buyer's name in a Factur-X file's XML, if there is one."""
    if not data.startswith(b"%PDF"):
        return None
    try:
        from facturx import get_xml_from_pdf
        from lxml import etree  # type: ignore[import-untyped]

        _, xml = get_xml_from_pdf(data, check_xsd=False)
        if not xml:
            return None
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except Exception:  # not Factur-X: no buyer to name
        return None
    names = root.xpath("//*[local-name()='BuyerTradeParty']/*[local-name()='Name']/text()")
    return str(names[0]) if names else None
