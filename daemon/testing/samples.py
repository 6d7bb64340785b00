"""Real Factur-X invoices for `demo` and the tests, made with the factur-x package.

reportlab draws a one-page PDF; factur-x embeds a MINIMUM-profile CII XML
checked against its XSD. Needs the `demo` extra (reportlab).
"""

from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape

_XML = """<?xml version="1.0" encoding="UTF-8"?>
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


def facturx_xml(number: str, net_cents: int, *, seller: str = "ACME SAS",
                buyer: str = "Client SARL", date: str = "20261124",
                type_code: str = "380") -> bytes:
    """380: an invoice; 381: a credit note."""
    tax = net_cents // 5
    return _XML.format(
        number=escape(number), date=date, seller=escape(seller), buyer=escape(buyer),
        type_code=type_code,
        net=f"{net_cents / 100:.2f}", tax=f"{tax / 100:.2f}",
        gross=f"{(net_cents + tax) / 100:.2f}",
    ).encode("utf-8")


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


def facturx_pdf(path: Path, number: str, net_cents: int = 10000, **fields: str) -> Path:
    """Write a Factur-X (MINIMUM) invoice to `path` and return it."""
    from facturx import generate_from_file

    lines = [f"Invoice {number}", f"Net {net_cents / 100:.2f} EUR", "Factur-X MINIMUM"]
    src = path.with_name(f".{path.name}.src")
    src.write_bytes(plain_pdf(lines))
    try:
        generate_from_file(
            str(src), facturx_xml(number, net_cents, **fields), output_pdf_file=str(path),
            check_xsd=True,
        )
    finally:
        src.unlink(missing_ok=True)
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
