"""The shipped rule artefacts: unchanged (their sha256s), licensed, and what they say
of real invoices made by other producers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from daemon.rulesets import HERE, RuleSet, all_stylesheets, altered, manifest
from daemon.schematron import check

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
# The Factur-X Schematrons number their assertions when they are built: the
# MANIFEST's FX-SCH-A-000493 is "Value of 'ram:ID' is not allowed", which the
# BASIC Schematron shipped here (Factur-X 1.09, factur-x 7.8) numbers 000026.
SAME_RULE = {"FX-SCH-A-000493": "FX-SCH-A-000026"}


def test_every_shipped_file_is_the_one_the_manifest_names():
    assert altered() == []
    listed = {HERE / name for entry in manifest().values() for name in entry["files"]}
    shipped = {p for p in HERE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
               and p.name != "manifest.json"}
    assert shipped == listed  # nothing unlisted, nothing missing


def test_each_set_names_its_source_version_and_licence_and_ships_the_licence():
    for name, entry in manifest().items():
        assert RuleSet(name) in (RuleSet.FACTURX, RuleSet.CEN, RuleSet.BRFR)
        for key in ("title", "version", "source", "repository", "tag", "licence"):
            assert entry[key], (name, key)
        assert any("LICENSE" in f for f in entry["files"]), name
    assert manifest()["cen"]["licence"] == "EUPL-1.2"
    assert manifest()["brfr"]["licence"] == "Apache-2.0"
    assert all(s.path.is_file() for s in all_stylesheets())


def test_an_altered_file_is_noticed(tmp_path, monkeypatch):
    import daemon.rulesets as rulesets

    copy = tmp_path / "rulesets"
    copy.mkdir()
    for name in manifest()["brfr"]["files"]:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((HERE / name).read_bytes())
    (copy / "brfr" / "BR-FR-Flux2-Schematron-CII.xslt").write_text("changed")
    monkeypatch.setattr(rulesets, "HERE", copy)
    assert "brfr/BR-FR-Flux2-Schematron-CII.xslt" in altered()


def _corpus() -> list[dict[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return []
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f, delimiter="\t")
                if row["rules_fatal"] not in ("n/a", "")]


@pytest.mark.skipif(not _corpus(), reason="the shared corpus is not beside the project")
@pytest.mark.parametrize("row", _corpus(), ids=lambda r: r["file"])
def test_the_corpus_breaks_the_rules_its_manifest_says(row):
    from facturx import get_xml_from_pdf

    from daemon.invoice_xml import _read_xml

    expected = sorted(
        SAME_RULE.get(r, r) for r in row["rules_fatal"].split(";") if r != "none"
    )
    # The MANIFEST says what the rules find whatever the XSD says (the daemon asks
    # them only of XML that passed it).
    name, xml = get_xml_from_pdf((CORPUS / row["file"]).read_bytes(), check_xsd=False)
    invoice = _read_xml(name, xml, False)
    assert invoice is not None
    if invoice.flavor == "xrechnung":  # the German CIUS: no Factur-X profile to judge
        assert expected == []
        return
    assert invoice.profile == row["profile"]
    report = check(xml, invoice.profile, invoice.seller_country)
    assert report.rule_ids() == expected
    assert report.unknown is None


_ONE_RULE = """<?xml version="1.0" encoding="UTF-8"?>
<xsl:stylesheet version="2.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:svrl="http://purl.oclc.org/dsdl/svrl">
  <xsl:template match="/">
    <svrl:schematron-output>
      <svrl:failed-assert test="false()" id="BR-FR-NEW" flag="fatal" location="/">
        <svrl:text>A rule of the next release.</svrl:text>
      </svrl:failed-assert>
    </svrl:schematron-output>
  </xsl:template>
</xsl:stylesheet>
"""


def test_the_update_script_shows_which_rule_ids_a_new_release_changes(tmp_path, capsys):
    from daemon.rulesets.update import main
    from daemon.testing.samples import facturx_pdf, no_siren_xml

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    facturx_pdf(corpus / "good.pdf", "U-1")
    facturx_pdf(corpus / "nosiren.pdf", "U-2", xml=no_siren_xml("U-2"))
    release = tmp_path / "France_RFE-1.4.0.99"
    for name, facts in manifest()["brfr"]["files"].items():
        target = release / facts["upstream"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((HERE / name).read_bytes())
    (release / manifest()["brfr"]["files"]["brfr/BR-FR-Flux2-Schematron-CII.xslt"][
        "upstream"]).write_text(_ONE_RULE)
    before = _shipped()
    assert main(["--brfr-dir", str(release), "--corpus", str(corpus)]) == 0
    out = capsys.readouterr().out.splitlines()
    changes = dict(line.split("\t") for line in out if line.startswith(str(corpus)))
    assert changes[str(corpus / "good.pdf")] == "+BR-FR-NEW"
    assert changes[str(corpus / "nosiren.pdf")] == "+BR-FR-NEW -BR-FR-10_BT-30"
    assert "cen\t1.3.16 -> 1.3.16" in out
    assert _shipped() == before  # no --write


def _shipped() -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in HERE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
