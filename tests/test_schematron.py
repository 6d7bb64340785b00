"""The business rules as the official Schematrons state them, run through Saxon here."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.invoice_xml import _read_xml
from daemon.rulesets import RuleSet, stylesheets
from daemon.schematron import MAX_LINES, Flag, check, clean
from daemon.testing.samples import (
    extended_xml,
    facturx_xml,
    no_siren_xml,
    totals_wrong_xml,
    two_due_dates_xml,
)


def judged(xml: bytes):
    invoice = _read_xml("factur-x.xml", xml, True)
    assert invoice is not None and invoice.xsd_errors == ()  # only the rules can tell
    return check(xml, invoice.profile, invoice.seller_country)


def test_a_valid_french_e_invoice_passes_all_three_sets():
    report = judged(facturx_xml("F-2026-1", 12345))
    assert report.fatal == () and report.unknown is None
    assert report.checked == (RuleSet.FACTURX, RuleSet.CEN, RuleSet.BRFR)


def test_totals_that_do_not_add_up_break_br_co_10():
    report = judged(totals_wrong_xml("F-2026-2"))
    assert "BR-CO-10" in report.rule_ids()
    found = [f for f in report.fatal if f.rule == "BR-CO-10"]
    assert RuleSet.CEN in {f.ruleset for f in found}
    assert all("BT-106" in f.text and f.location.startswith("/") for f in found)


def test_a_french_seller_without_siren_breaks_br_fr_10():
    report = judged(no_siren_xml("F-2026-3"))
    assert report.rule_ids() == ["BR-FR-10_BT-30"]
    assert report.fatal[0].ruleset is RuleSet.BRFR


def test_no_french_rules_for_a_seller_elsewhere():
    xml = no_siren_xml("F-2026-4").replace(
        b"<ram:CountryID>FR</ram:CountryID></ram:PostalTradeAddress>\n    <ram:URIUniversal",
        b"<ram:CountryID>DE</ram:CountryID></ram:PostalTradeAddress>\n    <ram:URIUniversal", 1,
    ).replace(b'schemeID="VA">FR11123456782', b'schemeID="VA">DE123456789')
    report = judged(xml)
    assert RuleSet.BRFR not in report.checked and report.fatal == ()


def test_an_extended_invoice_is_never_judged_by_the_cen_rules_that_would_reject_it():
    xml = extended_xml("F-2026-5")
    assert judged(xml).fatal == ()
    assert [s.ruleset for s in stylesheets("extended", "FR")] == [RuleSet.FACTURX, RuleSet.BRFR]
    # What would happen if they were run: a wrong rejection.
    wrongly = check(xml, "en16931", "FR")
    assert "BR-CO-10" in wrongly.rule_ids()


@pytest.mark.parametrize("profile", ["minimum", "basicwl"])
def test_cen_rules_never_run_on_minimum_or_basic_wl(profile):
    assert RuleSet.CEN not in {s.ruleset for s in stylesheets(profile, "FR")}


def test_a_validator_crash_is_unknown_never_a_rejection():
    report = judged(two_due_dates_xml("F-2026-6"))  # BR-FR-CO-07 crashes on two due dates
    assert report.fatal == ()
    assert report.unknown and "brfr" in report.unknown and "sequence of more than one" in (
        report.unknown
    )
    assert RuleSet.FACTURX in report.checked and RuleSet.BRFR not in report.checked


def test_warnings_of_the_rules_are_kept_apart_from_fatal_findings():
    xml = facturx_xml("F-2026-7", 100).replace(
        b"<ram:CityName>Paris</ram:CityName>", b"<ram:CityName></ram:CityName>"
    )
    report = judged(xml)
    assert any(f.flag is Flag.WARNING for f in report.findings)
    assert "PEPPOL-EN16931-R008" in report.rule_ids(Flag.WARNING)


def test_an_external_entity_never_reads_a_file_into_the_report(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE-4242")
    xml = facturx_xml("F-2026-8", 100).decode().replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<!DOCTYPE rsm:CrossIndustryInvoice [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    ).replace("<ram:Name>Client SARL</ram:Name>", "<ram:Name>&xxe;Client SARL</ram:Name>")
    text, _ = clean(xml.encode())
    assert "DOCTYPE" not in text and "ENTITY" not in text and "TOP-SECRET" not in text
    report = check(xml.encode(), "en16931", "FR")
    assert "TOP-SECRET" not in repr(report)
    assert report.unknown is None and report.checked  # judged, without the entity


def test_an_invoice_beyond_the_bounds_is_unknown_not_failed():
    xml = facturx_xml("F-2026-9", 100).decode()
    start = xml.index("  <ram:IncludedSupplyChainTradeLineItem>")
    end = xml.index("</ram:IncludedSupplyChainTradeLineItem>") + len(
        "</ram:IncludedSupplyChainTradeLineItem>\n"
    )
    many = xml[:start] + xml[start:end] * (MAX_LINES + 1) + xml[end:]
    report = check(many.encode(), "en16931", "FR")
    assert report.fatal == () and report.unknown and "lines" in report.unknown
    huge = check(b"<x>" + b" " * 2_100_000 + b"</x>", "en16931", "FR")
    assert huge.fatal == () and huge.unknown and "bytes" in huge.unknown


def test_xml_that_is_not_well_formed_is_unknown():
    report = check(b"<rsm:CrossIndustryInvoice", "en16931", "FR")
    assert report.fatal == () and report.unknown and "well-formed" in report.unknown


def test_a_profile_that_is_not_facturx_has_no_rules():
    assert stylesheets("xrechnung", "FR") == ()
    assert stylesheets(None, None) == ()


def test_no_rule_set_for_a_profile_is_unknown_never_passed():
    report = check(facturx_xml("F-2026-10", 100), "xrechnung", "DE")
    assert report.unknown and "no business rules" in report.unknown and not report.checked


def test_xml_that_skipped_its_xsd_is_not_handed_to_the_rules(tmp_path: Path):
    from daemon.invoice_xml import read_invoice
    from daemon.testing.samples import embedded_pdf

    other = embedded_pdf(tmp_path / "o.pdf", facturx_xml("F-2026-11", 100), name="invoice.xml")
    assert read_invoice(other.read_bytes(), keep_xml=True).xml is None
    named = embedded_pdf(tmp_path / "f.pdf", facturx_xml("F-2026-12", 100))
    assert read_invoice(named.read_bytes(), keep_xml=True).xml is not None
    assert read_invoice(named.read_bytes(), check_xsd=False, keep_xml=True).xml is None
