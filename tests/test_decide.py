"""Every branch of the decision, against a real journal in tmp_path (no daemon running)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.config import FacturxPolicy, Folder, NumberPolicy, Organization
from daemon.flow.decide import Verdict, decide
from daemon.flow.records import Inspection, Kind, Problem
from daemon.identity import Identity
from daemon.invoice_xml import FACTURX, Invoice
from daemon.journal import Journal, State

ORG = Organization(base_url="http://127.0.0.1:9", login="acme-1")
INBOX = Path("/srv/in")
FOLDER = Folder(inbox=INBOX, done=INBOX / "done", failed=INBOX / "failed", org=ORG,
                facturx=FacturxPolicy.REQUIRE)
HERE = INBOX / "a.pdf"
OTHER = INBOX / "b.pdf"
VALID = Invoice(attachment="factur-x.xml", flavor=FACTURX, profile="en16931", number="F-1",
                type_code="380", seller="ACME", seller_key="FR11123456782")


def found(sha: str = "a" * 64, **changes: object) -> Inspection:
    base = Inspection(sha256=sha, identity=Identity(1, 1, 10, 1, 1), kind=Kind.PDF, problem=None)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite3")
    yield opened
    await opened.close()


async def run(journal: Journal, inspection: Inspection | None = None, *,
              invoice: Invoice | None = VALID, unreadable: str | None = None,
              folder: Folder = FOLDER, path: Path = HERE,
              numbers: NumberPolicy = NumberPolicy.FAIL, in_hand: set[Path] | None = None):
    return await decide(
        journal, folder, path, inspection or found(), invoice, unreadable,
        numbers=numbers, in_hand=in_hand if in_hand is not None else {path},
    )


async def test_a_valid_new_invoice_is_sent(journal):
    decision = await run(journal)
    assert decision.verdict is Verdict.SEND and decision.warning is None


async def test_what_examining_found_wrong_fails_it(journal):
    problem = Problem("empty", "the file is empty")
    decision = await run(journal, found(problem=problem))
    assert decision.verdict is Verdict.FAIL and decision.problem == problem
    assert not decision.recovered


async def test_content_already_imported_is_known(journal):
    await journal.enqueue(ORG.key, "a" * 64, OTHER, "b.pdf", 10)
    await journal.record_imported(ORG.key, {"a" * 64: "inv-1"})
    decision = await run(journal)
    assert decision.verdict is Verdict.KNOWN
    assert decision.record is not None and decision.record.invoice_id == "inv-1"


async def test_a_file_rejected_before_at_this_path_fails_again_without_a_send(journal):
    await journal.mark_failed(ORG.key, "a" * 64, HERE, "a.pdf", 10,
                              "rejected_by_qonto: the number is missing")
    decision = await run(journal)
    assert decision.verdict is Verdict.FAIL and decision.recovered
    assert decision.problem == Problem("rejected_by_qonto", "the number is missing")


async def test_content_rejected_elsewhere_is_judged_afresh(journal):
    await journal.mark_failed(ORG.key, "a" * 64, OTHER, "b.pdf", 10, "rejected_by_qonto: x")
    assert (await run(journal)).verdict is Verdict.SEND


async def test_an_incomplete_file_waits(journal):
    assert (await run(journal, found(complete=False))).verdict is Verdict.INCOMPLETE


@pytest.mark.parametrize(("policy", "verdict", "warned"), [
    (FacturxPolicy.REQUIRE, Verdict.FAIL, False),
    (FacturxPolicy.WARN, Verdict.SEND, True),
    (FacturxPolicy.OFF, Verdict.SEND, False),
])
async def test_a_plain_pdf_under_each_facturx_policy(journal, policy, verdict, warned):
    folder = replace(FOLDER, facturx=policy)
    decision = await run(journal, invoice=Invoice(), folder=folder)
    assert decision.verdict is verdict
    assert (decision.warning is not None) is warned
    if verdict is Verdict.FAIL:
        assert decision.problem is not None and decision.problem.reason == "not_facturx"


async def test_an_unreadable_pdf_is_facturx_unreadable_under_require(journal):
    decision = await run(journal, invoice=None, unreadable="took longer than 10 s")
    assert decision.verdict is Verdict.FAIL
    assert decision.problem == Problem("facturx_unreadable", "took longer than 10 s")


async def _imported_number(journal: Journal) -> None:
    await journal.enqueue(ORG.key, "b" * 64, OTHER, "b.pdf", 10, VALID)
    await journal.record_imported(ORG.key, {"b" * 64: "inv-first"})


async def test_a_re_exported_number_fails_under_fail(journal):
    await _imported_number(journal)
    decision = await run(journal)
    assert decision.verdict is Verdict.FAIL and decision.problem is not None
    assert decision.problem.reason == "duplicate_number"
    assert "inv-first" in decision.problem.detail and decision.invoice == VALID


async def test_a_re_exported_number_is_sent_with_a_warning_under_warn(journal, _logs):
    await _imported_number(journal)
    assert (await run(journal, numbers=NumberPolicy.WARN)).verdict is Verdict.SEND
    assert [e["first_invoice_id"] for e in _logs if e["event"] == "duplicate_number"] == [
        "inv-first"
    ]


async def test_numbers_are_not_looked_at_under_off(journal):
    await _imported_number(journal)
    assert (await run(journal, numbers=NumberPolicy.OFF)).verdict is Verdict.SEND


async def test_a_credit_note_may_share_an_invoice_s_number(journal):
    await _imported_number(journal)
    credit = replace(VALID, type_code="381")
    assert (await run(journal, invoice=credit)).verdict is Verdict.SEND


async def test_a_queued_number_whose_file_is_gone_holds_no_number(journal):
    await journal.enqueue(ORG.key, "b" * 64, OTHER, "b.pdf", 10, VALID)
    # OTHER was rewritten or removed before it was sent: not in hand any more.
    assert (await run(journal, in_hand={HERE})).verdict is Verdict.SEND
    assert (await run(journal, in_hand={HERE, OTHER})).verdict is Verdict.FAIL


async def test_the_same_content_on_its_way_from_another_file_is_a_twin(journal):
    await journal.enqueue(ORG.key, "a" * 64, OTHER, "b.pdf", 10, VALID)
    decision = await run(journal, in_hand={HERE, OTHER})
    assert decision.verdict is Verdict.TWIN
    assert decision.record is not None and decision.record.path == OTHER
    assert decision.record.state is State.QUEUED
    # Its file gone from the daemon's hands, the content is sent from this one.
    assert (await run(journal, in_hand={HERE})).verdict is Verdict.SEND


# -- business rules -------------------------------------------------------------------

RULES_FAILED = Problem("rules_failed", "BR-CO-10: ...")
RULES_UNKNOWN = Problem("rules_unknown", "took longer than 20 s")


async def test_business_rules_fail_hold_or_warn_a_new_invoice(journal):
    from daemon.flow.rules import RulesVerdict

    failed = await decide(journal, FOLDER, HERE, found(), VALID, None, numbers=NumberPolicy.FAIL,
                          in_hand={HERE}, rules=RulesVerdict(problem=RULES_FAILED))
    assert failed.verdict is Verdict.FAIL and failed.problem == RULES_FAILED
    held = await decide(journal, FOLDER, HERE, found(), VALID, None, numbers=NumberPolicy.FAIL,
                        in_hand={HERE}, rules=RulesVerdict(hold=RULES_UNKNOWN))
    assert held.verdict is Verdict.HOLD and held.problem == RULES_UNKNOWN
    warned = await decide(journal, FOLDER, HERE, found(), VALID, None, numbers=NumberPolicy.FAIL,
                          in_hand={HERE}, rules=RulesVerdict(warning=RULES_UNKNOWN))
    assert warned.verdict is Verdict.SEND and warned.rules_warning == RULES_UNKNOWN


async def test_a_file_imported_from_this_very_path_is_never_judged_again(journal):
    """Imported, its e-invoice asked for, then a kill before the move: whatever the rules
    say now, it was sent; it goes to done/."""
    from daemon.flow.rules import RulesVerdict

    sending = replace(FOLDER, send_by_einvoice=True)
    await journal.enqueue(ORG.key, "a" * 64, HERE, "a.pdf", 10)
    await journal.record_imported(ORG.key, {"a" * 64: "inv-1"})
    for rules in (RulesVerdict(problem=RULES_FAILED), RulesVerdict(hold=RULES_UNKNOWN)):
        decision = await decide(journal, sending, HERE, found(), VALID, None,
                                numbers=NumberPolicy.FAIL, in_hand={HERE}, rules=rules)
        assert decision.verdict is Verdict.KNOWN and decision.einvoice
    # Dropped again elsewhere to be e-invoiced: judged as a new file would be.
    elsewhere = await decide(journal, sending, OTHER, found(), VALID, None,
                             numbers=NumberPolicy.FAIL, in_hand={OTHER},
                             rules=RulesVerdict(problem=RULES_FAILED))
    assert elsewhere.verdict is Verdict.FAIL


@pytest.mark.parametrize(("status", "codes", "state", "held_for", "correction"), [
    ("submission_failed", [200, 213], "final", None, True),  # the platform rejected it
    ("submission_failed", [200], "final", None, True),  # a failed submission
    (None, [], "rejected", None, True),  # Qonto refused the send
    ("declined", [200, 201, 202, 210], "final", None, False),  # the buyer refused: a credit note
    ("not_delivered", [200, 201, 202], "final", None, False),
    (None, [], "rejected", "client", False),  # held too long: retry --einvoice
    ("approved", [200, 201, 202, 205], "final", None, False),
])
async def test_a_re_export_after_a_rejection_is_a_correction_and_only_then(
    journal, _logs, status, codes, state, held_for, correction
):
    from daemon.journal import EinvoiceState

    await journal.enqueue(ORG.key, "b" * 64, OTHER, "b.pdf", 10, VALID)
    await journal.record_imported(ORG.key, {"b" * 64: "inv-1"}, einvoice={"b" * 64: OTHER})
    (e,) = await journal.einvoices_of(ORG.key, "b" * 64)
    from daemon.journal.einvoices import Event

    await journal.update_einvoice(
        e, state=EinvoiceState(state), einvoicing_status=status, held_for=held_for,
        events=tuple(Event(c, "2026-11-30T10:00:00Z") for c in codes),
    )
    decision = await run(journal, in_hand={HERE})
    if correction:
        assert decision.verdict is Verdict.SEND
        (said,) = [e for e in _logs if e["event"] == "invoice_correction"]
        assert said["corrects"] == "inv-1"
    else:
        assert decision.verdict is Verdict.FAIL and decision.problem is not None
        assert decision.problem.reason == "duplicate_number"
