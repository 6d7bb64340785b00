"""Business rules, checked in a worker process: the official Schematrons through Saxon.

`check` runs in a rules worker (see `validator.py`), where a time and memory
limit apply; it returns a small picklable `Report`. The policy (warn,
require) is applied by the caller.

Saxon resolves external entities and DTDs in what it parses, so it never sees
the invoice's own bytes: lxml reads them first (no network, no entities, no
DTD) and Saxon gets that tree written out again, with no DOCTYPE. Nothing on
the server can be read into a report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .invoice_xml import drop_entities
from .rulesets import RuleSet, Stylesheet, stylesheets

# Beyond these an invoice is not judged: the check would not fit its time limit.
MAX_XML_BYTES = 2_000_000
MAX_LINES = 2_000
_MAX_TEXT = 500
_SVRL = "{http://purl.oclc.org/dsdl/svrl}"


class Flag(StrEnum):
    FATAL = "fatal"  # the platform rejects the invoice
    WARNING = "warning"  # said, never blocking


@dataclass(frozen=True)
class Finding:
    rule: str  # "BR-CO-10", "BR-FR-10_BT-30", "FX-SCH-A-000026"
    flag: Flag
    text: str
    location: str  # an XPath into the invoice XML
    ruleset: RuleSet

    def as_json(self) -> dict[str, str]:
        return {
            "rule": self.rule, "flag": self.flag.value, "text": self.text,
            "location": self.location, "ruleset": self.ruleset.value,
        }


@dataclass(frozen=True)
class Report:
    """What the rules said of one invoice."""

    findings: tuple[Finding, ...] = ()
    # Why some rules could not judge it (too large, a validator error, a time-out).
    unknown: str | None = None
    checked: tuple[RuleSet, ...] = ()  # the sets that ran to the end

    @property
    def fatal(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.flag is Flag.FATAL)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.flag is Flag.WARNING)

    def rule_ids(self, flag: Flag = Flag.FATAL) -> list[str]:
        return sorted({f.rule for f in self.findings if f.flag is flag})


def too_large(xml: bytes) -> Report | None:
    """The report on an invoice too large to judge within the limits, or None."""
    if len(xml) > MAX_XML_BYTES:
        return Report(unknown=(
            f"the invoice XML has {len(xml):,} bytes, more than the {MAX_XML_BYTES:,} "
            "the business rules are checked on"
        ))
    return None


def clean(xml: bytes) -> tuple[str, int]:
    """The XML as Saxon may read it (no DOCTYPE, no entities), and its number of lines.

    Raises ValueError when it is not well-formed.
    """
    from lxml import etree  # type: ignore[import-untyped]

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
        remove_comments=True, remove_pis=True,
    )
    try:
        root = etree.fromstring(xml, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"the XML is not well-formed: {exc.msg}") from None
    drop_entities(root)
    lines = len(root.xpath("//*[local-name()='IncludedSupplyChainTradeLineItem']"))
    return etree.tostring(root, encoding="unicode"), lines


_processor: Any = None
_compiled: dict[Path, Any] = {}


def _saxon() -> Any:
    global _processor
    if _processor is None:
        from saxonche import PySaxonProcessor

        _processor = PySaxonProcessor(license=False)
    return _processor


def warm_up() -> int:
    """Start Saxon in a new worker (about half a second), before any invoice waits."""
    _saxon()
    return os.getpid()


def prepare(paths: tuple[str, ...]) -> None:
    """Compile these stylesheets once per worker (0.1-1 s each), outside any invoice's time."""
    for name in paths:
        path = Path(name)
        if path not in _compiled:
            xslt = _saxon().new_xslt30_processor()
            _compiled[path] = xslt.compile_stylesheet(stylesheet_file=str(path))


def check(
    xml: bytes, profile: str | None, seller_country: str | None, base: Path | None = None
) -> Report:
    """The findings of every rule set that applies to this Factur-X XML (`base`: another
    tree of rule artefacts than the shipped one)."""
    if (large := too_large(xml)) is not None:
        return large
    sheets = stylesheets(profile, seller_country, base)
    if not sheets:
        return Report(unknown=f"no business rules apply to the profile {profile!r}")
    try:
        text, lines = clean(xml)
    except ValueError as exc:
        return Report(unknown=str(exc))
    if lines > MAX_LINES:
        return Report(unknown=(
            f"the invoice has {lines:,} lines, more than the {MAX_LINES:,} the business "
            "rules are checked on"
        ))
    prepare(tuple(str(s.path) for s in sheets))
    node = _saxon().parse_xml(xml_text=text)
    findings: list[Finding] = []
    checked: list[RuleSet] = []
    unknown: list[str] = []
    for sheet in sheets:
        try:
            svrl = _compiled[sheet.path].transform_to_string(xdm_node=node)
        except Exception as exc:  # the validator's own error (XPTY0004...)
            message = " ".join(str(exc).split())[:_MAX_TEXT]
            unknown.append(f"the {sheet.ruleset.value} rules failed to run: {message}")
            continue
        findings.extend(_findings(svrl or "", sheet))
        checked.append(sheet.ruleset)
    return Report(
        findings=tuple(findings), unknown="; ".join(unknown) or None, checked=tuple(checked)
    )


def _findings(svrl: str, sheet: Stylesheet) -> list[Finding]:
    from lxml import etree

    root = etree.fromstring(svrl.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False))
    found = []
    for element in root.iter(f"{_SVRL}failed-assert", f"{_SVRL}successful-report"):
        flag = (element.get("flag") or "fatal").strip().lower()
        rule = element.get("id") or (
            # The Factur-X Schematrons' structural checks (an element not used in
            # the profile, a value not in its code list) carry no id.
            "FX-STRUCT" if sheet.ruleset is RuleSet.FACTURX else f"{sheet.ruleset.upper()}-?"
        )
        text = " ".join((element.findtext(f"{_SVRL}text") or "").split())
        found.append(Finding(
            rule=rule,
            flag=Flag.WARNING if flag in ("warning", "information", "info") else Flag.FATAL,
            text=text[:_MAX_TEXT],
            location=(element.get("location") or "")[:_MAX_TEXT],
            ruleset=sheet.ruleset,
        ))
    return found
