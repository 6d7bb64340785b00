"""Step 5: what to do with an examined file, given what the journal knows.

`decide` reads the journal and returns a `Decision`; it changes nothing. The
intake takes these decisions one at a time (the same content twice, the same
invoice number twice), and acts on them.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from ..config import Folder, NumberPolicy
from ..invoice_xml import Invoice
from ..journal import Journal, Record, State
from .facturx import duplicate_number, under_policy
from .lifecycle import platform_rejected
from .records import Inspection, Problem
from .rules import RulesVerdict

log = structlog.get_logger()


class Verdict(StrEnum):
    SEND = "send"  # queue it for upload
    TWIN = "twin"  # the same content is on its way from another file: wait for it
    KNOWN = "known"  # the content already has an invoice_id: done/, without an upload
    FAIL = "fail"  # it can never be imported: failed/
    INCOMPLETE = "incomplete"  # it stops short of its format's end: wait for its writer
    HOLD = "hold"  # the business rules could not judge it, and the folder requires them


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    problem: Problem | None = None  # FAIL: why
    warning: Problem | None = None  # SEND: what a "warn" policy says of it
    rules_warning: Problem | None = None  # SEND: what "warn" business rules say of it
    record: Record | None = None  # KNOWN, TWIN: the journal's row for this content
    # FAIL of a file the journal already knew at this path (a kill, a refused move):
    # a copy already complete in failed/ is recognised instead of made twice.
    recovered: bool = False
    invoice: Invoice | None = None  # FAIL: its facts go into the journal
    # KNOWN in a send_by_einvoice folder: the invoice is to be sent by e-invoice,
    # whatever folder first imported its content.
    einvoice: bool = False


async def decide(
    journal: Journal,
    folder: Folder,
    path: Path,
    found: Inspection,
    invoice: Invoice | None,
    unreadable: str | None,
    *,
    numbers: NumberPolicy,
    in_hand: Container[Path],
    rules: RulesVerdict | None = None,
) -> Decision:
    """The decision for one examined file. `in_hand`: the files the daemon holds now.
    `rules`: the business rules' verdict, when they were checked."""
    rules = rules or RulesVerdict()
    record = await journal.get(folder.org.key, found.sha256)
    # The journal already holds this very file (a kill, or a folder that refused it).
    here = record is not None and record.path == path
    if found.problem is not None:
        return Decision(Verdict.FAIL, problem=found.problem, recovered=here)
    if record is not None and record.invoice_id and record.state in (State.IMPORTED, State.DONE):
        if not folder.send_by_einvoice:
            return Decision(Verdict.KNOWN, record=record)
        if here:
            # Imported from this very file, not moved yet (a kill, a refused move): it
            # was judged then; no later verdict can unsend it.
            return Decision(Verdict.KNOWN, record=record, einvoice=True)
        # Dropped here to be e-invoiced: judged as a new file would be.
        problem, _ = under_policy(folder.facturx, found.kind, invoice, unreadable)
        problem = problem or rules.problem
        if problem is not None and found.complete:
            return Decision(Verdict.FAIL, problem=problem, invoice=invoice)
        if rules.hold is not None:
            return Decision(Verdict.HOLD, problem=rules.hold)
        return Decision(Verdict.KNOWN, record=record, einvoice=True,
                        rules_warning=rules.warning)
    if record is not None and record.state is State.FAILED and here:
        # Rejected before, and failed/ refused it: move it, never send it again.
        reason, _, detail = (record.last_error or "rejected: ").partition(": ")
        return Decision(Verdict.FAIL, problem=Problem(reason, detail), recovered=True)
    if not found.complete:
        return Decision(Verdict.INCOMPLETE)
    problem, warning = under_policy(folder.facturx, found.kind, invoice, unreadable)
    problem = problem or rules.problem
    if problem is None and rules.hold is not None:
        return Decision(Verdict.HOLD, problem=rules.hold)
    if problem is None:
        problem = await _number_taken(
            journal, folder, path, found, invoice, numbers=numbers, in_hand=in_hand
        )
    if problem is not None:
        return Decision(Verdict.FAIL, problem=problem, invoice=invoice)
    if (
        record is not None
        and record.state in (State.QUEUED, State.SENDING)
        and record.path != path
        and record.path in in_hand
    ):
        return Decision(Verdict.TWIN, record=record)
    return Decision(Verdict.SEND, warning=warning, rules_warning=rules.warning)


async def _number_taken(
    journal: Journal,
    folder: Folder,
    path: Path,
    found: Inspection,
    invoice: Invoice | None,
    *,
    numbers: NumberPolicy,
    in_hand: Container[Path],
) -> Problem | None:
    """A re-exported invoice: same seller and number as one already on its way, new bytes."""
    if numbers is NumberPolicy.OFF or invoice is None or not (
        invoice.number and invoice.seller_key
    ):
        return None
    others = await journal.find_numbers(
        folder.org.key, invoice.seller_key, invoice.number, invoice.type_code,
        other_than=found.sha256,
    )
    # Queued, but its file was rewritten or removed before it was sent: that version
    # never reached Qonto and never will; it holds no number.
    others = [
        o for o in others
        if not (o.state in (State.QUEUED, State.SENDING) and (
            o.path == path or o.path not in in_hand))
    ]
    if not others:
        return None
    first = await _standing(journal, folder.org.key, others)
    if first is None:
        # The platform rejected every one before: a corrected re-export under the
        # same number is the expected fix, and goes out.
        log.info(
            "invoice_correction", path=path, sha256=found.sha256, org=folder.org.key,
            number=invoice.number, seller=invoice.seller, corrects=others[0].invoice_id,
            first_path=others[0].path,
        )
        return None
    problem = duplicate_number(invoice, first.invoice_id, first.path)
    match numbers:
        case NumberPolicy.FAIL:
            return problem
        case NumberPolicy.WARN:
            log.warning(
                "duplicate_number", sha256=found.sha256, org=folder.org.key,
                number=invoice.number, seller=invoice.seller, first_invoice_id=first.invoice_id,
                first_path=first.path, detail=problem.detail,
            )
            return None


async def _standing(journal: Journal, org: str, others: list[Record]) -> Record | None:
    """The first of these that holds its number: any but an import the e-invoicing
    platform rejected (213, a failed submission)."""
    for other in others:
        if other.invoice_id is None:
            return other  # on its way
        sent = await journal.einvoice(org, other.invoice_id)
        if sent is None or not platform_rejected(
            sent.state, sent.einvoicing_status, sent.codes, sent.held_for
        ):
            return other
    return None
