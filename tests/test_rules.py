"""The business rules' verdict under each policy, and the French package's profiles. Pure."""

from __future__ import annotations

import json
from datetime import date

import pytest

from daemon.config import RulesPolicy
from daemon.flow.rules import BASICWL_UNTIL, judge, summary, with_profile
from daemon.rulesets import RuleSet
from daemon.schematron import Finding, Flag, Report

FATAL = Finding("BR-CO-10", Flag.FATAL, "Sum of lines", "/rsm:X", RuleSet.CEN)
WARNING = Finding("PEPPOL-EN16931-R008", Flag.WARNING, "empty element", "/rsm:Y",
                  RuleSet.FACTURX)
BROKEN = Report(findings=(FATAL, WARNING), checked=(RuleSet.FACTURX, RuleSet.CEN))
CLEAN = Report(findings=(WARNING,), checked=(RuleSet.FACTURX,))
UNKNOWN = Report(unknown="checking the business rules took longer than 20 s")
TODAY = date(2026, 11, 30)


def test_off_says_nothing_whatever_the_report():
    for report in (BROKEN, CLEAN, UNKNOWN):
        assert judge(RulesPolicy.OFF, report) == judge(RulesPolicy.OFF, Report())
        assert judge(RulesPolicy.OFF, report).problem is None


def test_require_fails_a_fatal_finding_with_each_finding_in_the_detail():
    verdict = judge(RulesPolicy.REQUIRE, BROKEN)
    assert verdict.problem is not None and verdict.problem.reason == "rules_failed"
    assert "BR-CO-10: Sum of lines (at /rsm:X)" in verdict.problem.detail
    assert "PEPPOL" not in verdict.problem.detail  # a warning never blocks
    assert verdict.warning is None and verdict.hold is None


def test_warnings_of_the_rules_never_block():
    for policy in RulesPolicy:
        verdict = judge(policy, CLEAN)
        assert (verdict.problem, verdict.warning, verdict.hold) == (None, None, None)


def test_warn_imports_a_broken_invoice_with_a_warning():
    verdict = judge(RulesPolicy.WARN, BROKEN)
    assert verdict.problem is None and verdict.warning is not None
    assert verdict.warning.reason == "rules_warning"


def test_unknown_is_never_a_failure_held_under_require_imported_under_warn():
    held = judge(RulesPolicy.REQUIRE, UNKNOWN)
    assert held.problem is None and held.hold is not None and held.hold.reason == "rules_unknown"
    assert "longer than 20 s" in held.hold.detail
    warned = judge(RulesPolicy.WARN, UNKNOWN)
    assert warned.problem is None and warned.hold is None
    assert warned.warning is not None and warned.warning.reason == "rules_unknown"


def test_a_fatal_finding_fails_even_when_another_set_could_not_run():
    partly = Report(findings=(FATAL,), unknown="the brfr rules failed to run: XPTY0004",
                    checked=(RuleSet.CEN,))
    assert judge(RulesPolicy.REQUIRE, partly).problem is not None


@pytest.mark.parametrize("profile", ["minimum", "basic"])
def test_minimum_and_basic_are_no_e_invoices(profile):
    report = with_profile(Report(), profile, einvoice=True, today=TODAY)
    (finding,) = report.fatal
    assert finding.rule == "FR-PROFILE" and profile.upper() in finding.text
    verdict = judge(RulesPolicy.REQUIRE, report)
    assert verdict.problem is not None and "EN16931" in verdict.problem.detail
    # Outside an e-invoicing folder the profile is no one's business.
    assert with_profile(Report(), profile, einvoice=False, today=TODAY) == Report()


def test_basic_wl_is_accepted_during_the_first_year_only():
    assert with_profile(Report(), "basicwl", einvoice=True, today=TODAY).fatal == ()
    late = with_profile(Report(), "basicwl", einvoice=True, today=BASICWL_UNTIL)
    assert [f.rule for f in late.fatal] == ["FR-PROFILE"]
    for profile in ("en16931", "extended"):
        assert with_profile(Report(), profile, einvoice=True, today=BASICWL_UNTIL) == Report()


def test_the_summary_is_what_lookup_shows():
    shown = json.loads(summary(BROKEN))
    assert shown["verdict"] == "failed"
    assert shown["fatal"] == ["BR-CO-10"] and shown["warnings"] == ["PEPPOL-EN16931-R008"]
    assert shown["findings"][0] == {
        "rule": "BR-CO-10", "flag": "fatal", "text": "Sum of lines", "location": "/rsm:X",
        "ruleset": "cen",
    }
    assert shown["checked"] == ["facturx", "cen"]
    assert set(shown["versions"]) == {"facturx", "cen", "brfr"}
    assert json.loads(summary(UNKNOWN))["verdict"] == "unknown"
    assert json.loads(summary(CLEAN))["verdict"] == "passed"


def test_a_pathological_report_is_kept_in_bounds_fatal_findings_first():
    many = tuple(
        Finding(f"BR-{i % 3}", Flag.WARNING if i % 2 else Flag.FATAL, "x" * 400, "/", RuleSet.CEN)
        for i in range(4000)
    )
    shown = json.loads(summary(Report(findings=many, checked=(RuleSet.CEN,))))
    assert len(shown["findings"]) == 200
    assert all(f["flag"] == "fatal" for f in shown["findings"])
    assert sum(shown["findings_left_out"].values()) == 3800
    assert len(json.dumps(shown)) < 200_000
