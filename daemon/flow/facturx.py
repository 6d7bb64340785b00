"""Step 4: the Factur-X verdict, what a file's invoice XML means for its import. Pure.

Reasons (a public contract, in sidecars and logs):
- `not_facturx`: no invoice XML at all (a plain PDF, or an image), or XML that
  is not an invoice syntax we know;
- `not_facturx_zugferd1`, `not_facturx_xrechnung`: an invoice XML of another
  flavor (ZUGFeRD 1.0; XRechnung, the German CII profile);
- `facturx_invalid`: Factur-X XML that fails the XSD of its profile;
- `facturx_unreadable`: the PDF could not be read within the parser's limits;
- `duplicate_number`: the seller's invoice number is already imported with
  other bytes (a re-exported invoice).
"""

from __future__ import annotations

from pathlib import Path

from ..config import FacturxPolicy
from ..invoice_xml import FACTURX, FACTURX_NAMES, XRECHNUNG, ZUGFERD1, Invoice
from .records import Kind, Problem


def under_policy(
    policy: FacturxPolicy, kind: Kind | None, invoice: Invoice | None, unreadable: str | None
) -> tuple[Problem | None, Problem | None]:
    """(a reason to fail, a reason to warn) under a folder's Factur-X policy."""
    if kind is None:
        return None, None
    match policy:
        case FacturxPolicy.OFF:
            return None, None
        case FacturxPolicy.WARN:
            return None, facturx_verdict(kind, invoice, unreadable)
        case FacturxPolicy.REQUIRE:
            return facturx_verdict(kind, invoice, unreadable), None


def facturx_verdict(kind: Kind, invoice: Invoice | None, unreadable: str | None) -> Problem | None:
    """Why a file is not valid Factur-X, or None when it is."""
    if kind is not Kind.PDF:
        return Problem(
            "not_facturx",
            f"a {kind.upper()} image carries no Factur-X XML: send the invoice as the "
            "Factur-X PDF your billing software makes",
        )
    if unreadable is not None:
        return Problem("facturx_unreadable", unreadable)
    if invoice is None or invoice.flavor is None:
        return Problem(
            "not_facturx",
            "the PDF embeds no invoice XML (factur-x.xml): export the invoice as Factur-X",
        )
    if invoice.flavor == ZUGFERD1:
        return Problem(
            "not_facturx_zugferd1",
            f"the PDF embeds ZUGFeRD 1.0 XML ({invoice.attachment}), which predates "
            "Factur-X: export it as Factur-X (ZUGFeRD 2.x)",
        )
    if invoice.flavor == XRECHNUNG:
        return Problem(
            "not_facturx_xrechnung",
            f"the PDF embeds XRechnung XML ({invoice.attachment}), the German profile, "
            "not Factur-X: export it as Factur-X",
        )
    if invoice.flavor != FACTURX or (invoice.attachment or "").lower() not in FACTURX_NAMES:
        return Problem(
            "not_facturx",
            f"the PDF embeds {invoice.attachment}, not a Factur-X XML named factur-x.xml",
        )
    if invoice.xsd_errors:
        return Problem(
            "facturx_invalid",
            f"the Factur-X XML ({invoice.profile} profile) does not pass its XSD: "
            + "; ".join(invoice.xsd_errors),
        )
    return None


def duplicate_number(invoice: Invoice, first_invoice_id: str | None, first_path: Path) -> Problem:
    """A re-exported invoice: the same seller's number, already imported with other bytes."""
    where = (
        f"already imported as invoice_id {first_invoice_id}" if first_invoice_id
        else "already on its way to Qonto"
    )
    return Problem(
        "duplicate_number",
        f"invoice number {invoice.number} of {invoice.seller or invoice.seller_key} is "
        f"{where} (file {first_path}); an issued invoice is never re-issued: a correction "
        "is a credit note with its own number",
    )
