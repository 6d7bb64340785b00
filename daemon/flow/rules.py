"""Step 4, second half: what the business rules' report means for a file's import. Pure.

Reasons and events (a public contract, in sidecars and logs):
- `rules_failed`: under "require", a fatal finding (or, in a send_by_einvoice
  folder, a profile the French e-invoicing package does not accept): failed/;
- `rules_warning`: the same under "warn": imported, the rule ids logged;
- `rules_unknown`: the rules could not judge the invoice (too large, a time-out,
  the checker's own error). Never a rule failure: under "warn" the file is
  imported with a warning; under "require" it is held in its inbox and looked
  at again, with an error saying why.
Findings flagged `warning` by the rules never block.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date

from ..config import RulesPolicy
from ..invoice_xml import Invoice
from ..rulesets import RuleSet, versions
from ..schematron import Finding, Flag, Report
from .records import Problem

# FNFE-MPE's explanatory note V1.4.0: MINIMUM and BASIC are not e-invoices in the
# French package; BASIC WL is accepted during the first year of the reform only.
_NOT_EINVOICES = ("minimum", "basic")
BASICWL_UNTIL = date(2027, 9, 1)  # the end of the reform's first year
_SHOWN = 20  # findings spelled out in a detail
_KEPT = 200  # findings kept (journal, sidecar, lookup); beyond, a count per rule id


@dataclass(frozen=True)
class RulesVerdict:
    """At most one of these is set; none when the rules have nothing against it."""

    problem: Problem | None = None  # rules_failed: failed/
    warning: Problem | None = None  # rules_warning or rules_unknown, imported anyway
    hold: Problem | None = None  # rules_unknown under require: the file waits


def with_profile(report: Report, profile: str | None, *, einvoice: bool, today: date) -> Report:
    """The report, with a fatal finding when an e-invoice's profile is not accepted."""
    if not einvoice or profile is None:
        return report
    if profile in _NOT_EINVOICES:
        why = "is not an e-invoice in the French e-invoicing package (FNFE-MPE note V1.4.0)"
    elif profile == "basicwl" and today >= BASICWL_UNTIL:
        why = (f"was accepted by the French e-invoicing package until "
               f"{BASICWL_UNTIL.isoformat()} only")
    else:
        return report
    finding = Finding(
        rule="FR-PROFILE", flag=Flag.FATAL,
        text=f"the Factur-X profile {profile.upper()} {why}: export the invoice with the "
        "EN16931 (or EXTENDED) profile to send it by e-invoice",
        location="/rsm:CrossIndustryInvoice/rsm:ExchangedDocumentContext",
        ruleset=RuleSet.PROFILE,
    )
    return Report(
        findings=(finding, *report.findings), unknown=report.unknown, checked=report.checked
    )


def judge(policy: RulesPolicy, report: Report) -> RulesVerdict:
    """The verdict on a report under a folder's rules policy."""
    match policy:
        case RulesPolicy.OFF:
            return RulesVerdict()
        case RulesPolicy.WARN:
            if report.fatal:
                return RulesVerdict(warning=_broken("rules_warning", report))
            if report.unknown:
                return RulesVerdict(warning=_unknown(report))
            return RulesVerdict()
        case RulesPolicy.REQUIRE:
            # A fatal finding from the sets that ran is a sure rejection, even when
            # another set could not run.
            if report.fatal:
                return RulesVerdict(problem=_broken("rules_failed", report))
            if report.unknown:
                return RulesVerdict(hold=_unknown(report))
            return RulesVerdict()


def summary(report: Report) -> str:
    """The report as the journal keeps it and `lookup --json` shows it (JSON)."""
    verdict = "failed" if report.fatal else "unknown" if report.unknown else "passed"
    # Fatal findings first; a pathological invoice (one finding per line) is kept
    # in bounds, with how many of each rule were left out.
    ordered = sorted(report.findings, key=lambda f: f.flag is not Flag.FATAL)
    left_out = Counter(f.rule for f in ordered[_KEPT:])
    return json.dumps({
        "verdict": verdict,
        "fatal": report.rule_ids(Flag.FATAL),
        "warnings": report.rule_ids(Flag.WARNING),
        "findings": [f.as_json() for f in ordered[:_KEPT]],
        "findings_left_out": dict(left_out),
        "unknown": report.unknown,
        "checked": [s.value for s in report.checked],
        "versions": versions(),
    }, ensure_ascii=False)


def recorded(invoice: Invoice, report: Report) -> Invoice:
    """The invoice with its report recorded, and its XML let go."""
    import dataclasses

    return dataclasses.replace(invoice, xml=None, rules=summary(report))


def _broken(reason: str, report: Report) -> Problem:
    fatal = report.fatal
    shown = "; ".join(
        f"{f.rule}: {f.text}" + (f" (at {f.location})" if f.location else "")
        for f in fatal[:_SHOWN]
    )
    more = f"; and {len(fatal) - _SHOWN} more" if len(fatal) > _SHOWN else ""
    also = f" ({report.unknown})" if report.unknown else ""
    return Problem(
        reason,
        f"the invoice breaks {len(fatal)} business rule(s) the e-invoicing platform checks "
        f"and would reject it: {shown}{more}. Correct the invoice in the billing software "
        f"and export it again{also}",
    )


def _unknown(report: Report) -> Problem:
    return Problem(
        "rules_unknown",
        f"the business rules could not judge the invoice: {report.unknown}",
    )


def report_of(invoice: Invoice | None) -> dict[str, object]:
    """The report recorded with an invoice (`summary`), empty when not checked."""
    if invoice is None or invoice.rules is None:
        return {}
    found = json.loads(invoice.rules)
    return found if isinstance(found, dict) else {}


def fatal_ids(invoice: Invoice | None) -> list[str]:
    """The fatal rule ids recorded with an invoice."""
    fatal = report_of(invoice).get("fatal")
    return [str(r) for r in fatal] if isinstance(fatal, list) else []
