"""Reading the invoice XML of a PDF: flavor, profile, XSD errors, and the invoice's facts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from daemon.invoice_xml import FACTURX, XRECHNUNG, ZUGFERD1, read_invoice
from daemon.testing.samples import facturx_pdf, facturx_xml, plain_pdf

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def test_a_facturx_invoice_made_here(tmp_path):
    found = read_invoice(facturx_pdf(tmp_path / "f.pdf", "F-2026-7", 12345).read_bytes())
    assert (found.attachment, found.flavor, found.profile) == ("factur-x.xml", FACTURX, "en16931")
    assert found.xsd_errors == ()
    assert found.seller_country == "FR"
    assert found.xml is None  # only when asked for
    assert found.facts() == {
        "flavor": "factur-x", "profile": "en16931", "number": "F-2026-7",
        "issue_date": "2026-11-24", "seller": "ACME SAS", "buyer": "Client SARL",
        "grand_total": "148.14", "currency": "EUR",
    }
    assert found.seller_key == "fr11123456782"  # the VAT id names the seller


def test_what_is_found_is_plain_python_the_daemon_unpickles_without_the_parsers(tmp_path):
    # Read in a parser process, unpickled in the daemon: a pypdf or lxml string type
    # would load those libraries into the daemon (and hold up its first request).
    found = read_invoice(facturx_pdf(tmp_path / "f.pdf", "F-1", 100).read_bytes())
    for name, value in vars(found).items():
        assert type(value) in (str, tuple, type(None)), name
    assert all(type(e) is str for e in found.xsd_errors)


def test_a_plain_pdf_has_no_invoice_xml():
    found = read_invoice(plain_pdf(["just a letter"]))
    assert found.flavor is None and found.label is None


def test_xml_that_breaks_the_xsd_gives_its_first_errors_with_lines(tmp_path):
    from facturx import generate_from_file

    bad = facturx_xml("BAD-1", 100).replace(
        b"<ram:TypeCode>380</ram:TypeCode>", b"<ram:TypeCode>380</ram:TypeCode><ram:Oops/>"
    )
    src = tmp_path / "src.pdf"
    src.write_bytes(plain_pdf(["bad"]))
    generate_from_file(str(src), bad, output_pdf_file=str(tmp_path / "bad.pdf"),
                       check_xsd=False)
    found = read_invoice((tmp_path / "bad.pdf").read_bytes())
    assert found.flavor == FACTURX and found.xsd_errors
    assert found.xsd_errors[0].startswith("line ") and "Oops" in found.xsd_errors[0]


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(), reason="no shared corpus")
def test_every_corpus_file_is_read_as_its_manifest_says():
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for row in rows:
        found = read_invoice((CORPUS / row["file"]).read_bytes())
        if row["embedded_xml"] == "-":
            # factur-x 7.8 skips a factur-x.xml that is not well-formed; we name it.
            assert found.flavor is None or "not well-formed" in found.xsd_errors[0], row["file"]
            continue
        assert found.attachment == row["embedded_xml"], row["file"]
        assert found.profile == row["profile"], row["file"]
        expected = {"zugferd": ZUGFERD1}.get(row["flavor"], row["flavor"])
        if row["embedded_xml"] == "xrechnung.xml":
            expected = XRECHNUNG
        assert found.flavor == expected, row["file"]
        if expected == FACTURX:
            assert (found.xsd_errors == ()) == (row["xsd (factur-x 7.8)"] == "valid"), row["file"]
        assert found.number and found.seller_key, row["file"]


def test_a_broken_facturx_xml_is_named_with_its_line():
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(plain_pdf(["broken xml"]))))
    writer.add_attachment("factur-x.xml", b'<?xml version="1.0"?>\n<rsm:Cross>\n<unclosed>')
    out = io.BytesIO()
    writer.write(out)
    found = read_invoice(out.getvalue())
    assert found.attachment == "factur-x.xml" and found.flavor == FACTURX
    assert found.xsd_errors and "not well-formed" in found.xsd_errors[0]
    assert found.xsd_errors[0].startswith("line ")
