"""Real Factur-X invoices for `demo` and the tests, made with the factur-x package.

reportlab draws a one-page PDF; factur-x embeds a CII XML (EN16931 profile,
valid under the Factur-X, EN 16931 and French BR-FR rules; or MINIMUM) checked
against its XSD. Needs the `demo` extra (reportlab).
"""

from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape

_MINIMUM = """<?xml version="1.0" encoding="UTF-8"?>
<rsm:CrossIndustryInvoice
 xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
 xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
 xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
 xmlns:qdt="urn:un:unece:uncefact:data:standard:QualifiedDataType:100">
 <rsm:ExchangedDocumentContext>
  <ram:GuidelineSpecifiedDocumentContextParameter>
   <ram:ID>urn:factur-x.eu:1p0:minimum</ram:ID>
  </ram:GuidelineSpecifiedDocumentContextParameter>
 </rsm:ExchangedDocumentContext>
 <rsm:ExchangedDocument>
  <ram:ID>{number}</ram:ID>
  <ram:TypeCode>{type_code}</ram:TypeCode>
  <ram:IssueDateTime><udt:DateTimeString format="102">{date}</udt:DateTimeString></ram:IssueDateTime>
 </rsm:ExchangedDocument>
 <rsm:SupplyChainTradeTransaction>
  <ram:ApplicableHeaderTradeAgreement>
   <ram:SellerTradeParty>
    <ram:Name>{seller}</ram:Name>
    <ram:SpecifiedLegalOrganization><ram:ID schemeID="0002">123456782</ram:ID></ram:SpecifiedLegalOrganization>
    <ram:PostalTradeAddress><ram:CountryID>FR</ram:CountryID></ram:PostalTradeAddress>
    <ram:SpecifiedTaxRegistration><ram:ID schemeID="VA">FR11123456782</ram:ID></ram:SpecifiedTaxRegistration>
   </ram:SellerTradeParty>
   <ram:BuyerTradeParty>
    <ram:Name>{buyer}</ram:Name>
   </ram:BuyerTradeParty>
  </ram:ApplicableHeaderTradeAgreement>
  <ram:ApplicableHeaderTradeDelivery/>
  <ram:ApplicableHeaderTradeSettlement>
   <ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
   <ram:SpecifiedTradeSettlementHeaderMonetarySummation>
    <ram:TaxBasisTotalAmount>{net}</ram:TaxBasisTotalAmount>
    <ram:TaxTotalAmount currencyID="EUR">{tax}</ram:TaxTotalAmount>
    <ram:GrandTotalAmount>{gross}</ram:GrandTotalAmount>
    <ram:DuePayableAmount>{gross}</ram:DuePayableAmount>
   </ram:SpecifiedTradeSettlementHeaderMonetarySummation>
  </ram:ApplicableHeaderTradeSettlement>
 </rsm:SupplyChainTradeTransaction>
</rsm:CrossIndustryInvoice>
"""


# EN16931 profile, a French seller and buyer: passes the Factur-X, EN 16931 and
# BR-FR rules, as an e-invoice must.
_EN16931 = """<?xml version="1.0" encoding="UTF-8"?>
<rsm:CrossIndustryInvoice
 xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
 xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
 xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
 xmlns:qdt="urn:un:unece:uncefact:data:standard:QualifiedDataType:100">
 <rsm:ExchangedDocumentContext>
  <ram:BusinessProcessSpecifiedDocumentContextParameter><ram:ID>S1</ram:ID></ram:BusinessProcessSpecifiedDocumentContextParameter>
  <ram:GuidelineSpecifiedDocumentContextParameter><ram:ID>urn:cen.eu:en16931:2017</ram:ID></ram:GuidelineSpecifiedDocumentContextParameter>
 </rsm:ExchangedDocumentContext>
 <rsm:ExchangedDocument>
  <ram:ID>{number}</ram:ID>
  <ram:TypeCode>{type_code}</ram:TypeCode>
  <ram:IssueDateTime><udt:DateTimeString format="102">{date}</udt:DateTimeString></ram:IssueDateTime>
  <ram:IncludedNote><ram:Content>Pénalités de retard : trois fois le taux d'intérêt légal.</ram:Content><ram:SubjectCode>PMD</ram:SubjectCode></ram:IncludedNote>
  <ram:IncludedNote><ram:Content>Indemnité forfaitaire pour frais de recouvrement : 40 EUR.</ram:Content><ram:SubjectCode>PMT</ram:SubjectCode></ram:IncludedNote>
  <ram:IncludedNote><ram:Content>Pas d'escompte pour paiement anticipé.</ram:Content><ram:SubjectCode>AAB</ram:SubjectCode></ram:IncludedNote>
 </rsm:ExchangedDocument>
 <rsm:SupplyChainTradeTransaction>
  <ram:IncludedSupplyChainTradeLineItem>
   <ram:AssociatedDocumentLineDocument><ram:LineID>1</ram:LineID></ram:AssociatedDocumentLineDocument>
   <ram:SpecifiedTradeProduct><ram:Name>Services</ram:Name></ram:SpecifiedTradeProduct>
   <ram:SpecifiedLineTradeAgreement><ram:NetPriceProductTradePrice><ram:ChargeAmount>{net}</ram:ChargeAmount></ram:NetPriceProductTradePrice></ram:SpecifiedLineTradeAgreement>
   <ram:SpecifiedLineTradeDelivery><ram:BilledQuantity unitCode="C62">1</ram:BilledQuantity></ram:SpecifiedLineTradeDelivery>
   <ram:SpecifiedLineTradeSettlement>
    <ram:ApplicableTradeTax><ram:TypeCode>VAT</ram:TypeCode><ram:CategoryCode>S</ram:CategoryCode><ram:RateApplicablePercent>20.00</ram:RateApplicablePercent></ram:ApplicableTradeTax>
    <ram:SpecifiedTradeSettlementLineMonetarySummation><ram:LineTotalAmount>{net}</ram:LineTotalAmount></ram:SpecifiedTradeSettlementLineMonetarySummation>
   </ram:SpecifiedLineTradeSettlement>
  </ram:IncludedSupplyChainTradeLineItem>
  <ram:ApplicableHeaderTradeAgreement>
   <ram:SellerTradeParty>
    <ram:Name>{seller}</ram:Name>
    <ram:SpecifiedLegalOrganization><ram:ID schemeID="0002">123456782</ram:ID></ram:SpecifiedLegalOrganization>
    <ram:PostalTradeAddress><ram:PostcodeCode>75001</ram:PostcodeCode><ram:LineOne>1 rue de la Paix</ram:LineOne><ram:CityName>Paris</ram:CityName><ram:CountryID>FR</ram:CountryID></ram:PostalTradeAddress>
    <ram:URIUniversalCommunication><ram:URIID schemeID="0225">123456782</ram:URIID></ram:URIUniversalCommunication>
    <ram:SpecifiedTaxRegistration><ram:ID schemeID="VA">FR11123456782</ram:ID></ram:SpecifiedTaxRegistration>
   </ram:SellerTradeParty>
   <ram:BuyerTradeParty>
    <ram:Name>{buyer}</ram:Name>
    <ram:SpecifiedLegalOrganization><ram:ID schemeID="0002">732829320</ram:ID></ram:SpecifiedLegalOrganization>
    <ram:PostalTradeAddress><ram:PostcodeCode>69001</ram:PostcodeCode><ram:LineOne>2 place Bellecour</ram:LineOne><ram:CityName>Lyon</ram:CityName><ram:CountryID>FR</ram:CountryID></ram:PostalTradeAddress>
    <ram:URIUniversalCommunication><ram:URIID schemeID="0225">732829320</ram:URIID></ram:URIUniversalCommunication>
   </ram:BuyerTradeParty>
  </ram:ApplicableHeaderTradeAgreement>
  <ram:ApplicableHeaderTradeDelivery><ram:ActualDeliverySupplyChainEvent><ram:OccurrenceDateTime><udt:DateTimeString format="102">{date}</udt:DateTimeString></ram:OccurrenceDateTime></ram:ActualDeliverySupplyChainEvent></ram:ApplicableHeaderTradeDelivery>
  <ram:ApplicableHeaderTradeSettlement>
   <ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
   <ram:SpecifiedTradeSettlementPaymentMeans><ram:TypeCode>30</ram:TypeCode><ram:PayeePartyCreditorFinancialAccount><ram:IBANID>FR7630006000011234567890189</ram:IBANID></ram:PayeePartyCreditorFinancialAccount></ram:SpecifiedTradeSettlementPaymentMeans>
   <ram:ApplicableTradeTax><ram:CalculatedAmount>{tax}</ram:CalculatedAmount><ram:TypeCode>VAT</ram:TypeCode><ram:BasisAmount>{net}</ram:BasisAmount><ram:CategoryCode>S</ram:CategoryCode><ram:RateApplicablePercent>20.00</ram:RateApplicablePercent></ram:ApplicableTradeTax>
   <ram:SpecifiedTradePaymentTerms><ram:DueDateDateTime><udt:DateTimeString format="102">{date}</udt:DateTimeString></ram:DueDateDateTime></ram:SpecifiedTradePaymentTerms>
   <ram:SpecifiedTradeSettlementHeaderMonetarySummation>
    <ram:LineTotalAmount>{net}</ram:LineTotalAmount>
    <ram:TaxBasisTotalAmount>{net}</ram:TaxBasisTotalAmount>
    <ram:TaxTotalAmount currencyID="EUR">{tax}</ram:TaxTotalAmount>
    <ram:GrandTotalAmount>{gross}</ram:GrandTotalAmount>
    <ram:DuePayableAmount>{gross}</ram:DuePayableAmount>
   </ram:SpecifiedTradeSettlementHeaderMonetarySummation>
{preceding}  </ram:ApplicableHeaderTradeSettlement>
 </rsm:SupplyChainTradeTransaction>
</rsm:CrossIndustryInvoice>
"""
_TEMPLATES = {"minimum": _MINIMUM, "en16931": _EN16931}


def facturx_xml(number: str, net_cents: int, *, seller: str = "ACME SAS",
                buyer: str = "Client SARL", date: str = "20261124",
                type_code: str = "380", profile: str = "en16931") -> bytes:
    """380: an invoice; 381: a credit note. `profile`: "en16931" or "minimum"."""
    tax = net_cents // 5
    return _TEMPLATES[profile].format(
        number=escape(number), date=date, seller=escape(seller), buyer=escape(buyer),
        type_code=type_code,
        # A credit note names the invoice it corrects (BR-FR-CO-05).
        preceding=(
            f"   <ram:InvoiceReferencedDocument><ram:IssuerAssignedID>{escape(number)}-0"
            "</ram:IssuerAssignedID><ram:FormattedIssueDateTime><qdt:DateTimeString "
            f'format="102">{date}</qdt:DateTimeString></ram:FormattedIssueDateTime>'
            "</ram:InvoiceReferencedDocument>\n"
            if type_code == "381" else ""
        ),
        net=f"{net_cents / 100:.2f}", tax=f"{tax / 100:.2f}",
        gross=f"{(net_cents + tax) / 100:.2f}",
    ).encode("utf-8")


# What business rules catch, made from the valid invoice above: each is valid
# against its XSD, so only the rules can tell.
_TERMS = (
    '<ram:SpecifiedTradePaymentTerms><ram:DueDateDateTime><udt:DateTimeString format="102">'
    "{date}</udt:DateTimeString></ram:DueDateDateTime></ram:SpecifiedTradePaymentTerms>"
)


def totals_wrong_xml(number: str, net_cents: int = 10000) -> bytes:
    """The lines add up to more than the invoice's line total (BR-CO-10)."""
    xml = facturx_xml(number, net_cents).decode()
    net = f"{net_cents / 100:.2f}"
    wrong = f"{(net_cents - 1000) / 100:.2f}"
    header = f"<ram:LineTotalAmount>{net}</ram:LineTotalAmount>\n    <ram:TaxBasisTotalAmount>"
    assert header in xml
    return xml.replace(
        header, f"<ram:LineTotalAmount>{wrong}</ram:LineTotalAmount>\n    <ram:TaxBasisTotalAmount>"
    ).encode()


def no_siren_xml(number: str, net_cents: int = 10000) -> bytes:
    """A French seller without its SIREN (BR-FR-10)."""
    xml = facturx_xml(number, net_cents).decode()
    siren = (
        '<ram:SpecifiedLegalOrganization><ram:ID schemeID="0002">123456782</ram:ID>'
        "</ram:SpecifiedLegalOrganization>\n    "
    )
    assert siren in xml
    return xml.replace(siren, "", 1).encode()


def extended_xml(number: str, net_cents: int = 10000) -> bytes:
    """EXTENDED, with a line given for information only (not in the totals): valid
    EXTENDED, which the CEN EN 16931 rules would reject (BR-CO-10)."""
    xml = facturx_xml(number, net_cents).decode().replace(
        "urn:cen.eu:en16931:2017</ram:ID>",
        "urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended</ram:ID>",
    )
    start = xml.index("  <ram:IncludedSupplyChainTradeLineItem>")
    end = xml.index("</ram:IncludedSupplyChainTradeLineItem>") + len(
        "</ram:IncludedSupplyChainTradeLineItem>\n"
    )
    info = xml[start:end].replace(
        "<ram:LineID>1</ram:LineID>",
        "<ram:LineID>2</ram:LineID><ram:LineStatusReasonCode>INFORMATION"
        "</ram:LineStatusReasonCode>",
    )
    return (xml[:end] + info + xml[end:]).encode()


def two_due_dates_xml(number: str, net_cents: int = 10000) -> bytes:
    """EXTENDED with two due dates: BR-FR-CO-07 (France_RFE 1.4.0.02) crashes on it."""
    xml = extended_xml(number, net_cents).decode()
    first = _TERMS.format(date="20261124")
    assert first in xml
    return xml.replace(first, first + _TERMS.format(date="20261224")).encode()


def plain_pdf(lines: list[str], *, padding_bytes: int = 0) -> bytes:
    """A one-page PDF; `padding_bytes` of incompressible noise make it larger."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, pagesize=A4, invariant=True)
    y = 800
    for line in lines:
        pdf.drawString(72, y, line)
        y -= 18
    if padding_bytes:
        import os

        pdf.setTitle(os.urandom(8).hex())
        # A comment-like annotation would be cleaner; a metadata blob is enough to size a test file.
        pdf.setSubject(os.urandom(padding_bytes // 2).hex())
    pdf.showPage()
    pdf.save()
    return buf.getvalue()


def facturx_pdf(
    path: Path, number: str, net_cents: int = 10000, *, xml: bytes | None = None,
    **fields: str,
) -> Path:
    """Write a Factur-X invoice (EN16931 profile unless `profile` says; or `xml`) to `path`."""
    from facturx import generate_from_file

    lines = [f"Invoice {number}", f"Net {net_cents / 100:.2f} EUR", "Factur-X"]
    src = path.with_name(f".{path.name}.src")
    src.write_bytes(plain_pdf(lines))
    try:
        generate_from_file(
            str(src), xml or facturx_xml(number, net_cents, **fields), output_pdf_file=str(path),
            check_xsd=xml is None,
        )
    finally:
        src.unlink(missing_ok=True)
    return path


def embedded_pdf(path: Path, xml: bytes, name: str = "factur-x.xml") -> Path:
    """A PDF carrying `xml` as an attachment, as is: for XML the factur-x package
    would refuse to embed (a DOCTYPE with entities, for instance)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain_pdf(["Invoice"]))))
    writer.add_attachment(name, xml)
    with open(path, "wb") as out:
        writer.write(out)
    return path


def slow_pdf(decoded_bytes: int = 20_000_000) -> bytes:
    """A small, valid PDF that takes pypdf a long time to read: a hostile input for tests.

    Its embedded `factur-x.xml` is a Flate stream with a PNG predictor of one
    column, which pypdf undoes in a pure-Python loop, row by row.
    """
    import zlib

    rows = b"\x00\x00" * (decoded_bytes // 2)  # predictor byte + one column, per row
    stream = zlib.compress(rows, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names "
        b"[(factur-x.xml) 4 0 R] >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
        b"<< /Type /Filespec /F (factur-x.xml) /UF (factur-x.xml) /EF << /F 5 0 R >> >>",
        b"<< /Type /EmbeddedFile /Length %d /Filter /FlateDecode "
        b"/DecodeParms << /Predictor 12 /Columns 1 >> >>\nstream\n" % len(stream)
        + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)
