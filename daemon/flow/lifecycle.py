"""What Qonto's e-invoicing answers mean: lifecycle codes, statuses, and `status`'s counts.

Pure: the e-invoicing stage and the commands read their meaning here.
Lifecycle events come as Qonto sends them (`status_code` a string, or an
integer; `timestamp`; `reason` and `reason_message`), and whatever else comes
is kept as it came, never a reason to stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from ..journal import EinvoiceState
from ..journal.einvoices import Event

# The French reform's lifecycle codes (as Qonto reports them).
LABELS = {
    200: "Déposée", 201: "Émise par la plateforme", 202: "Reçue par la plateforme",
    203: "Mise à disposition", 204: "Prise en charge", 205: "Approuvée",
    206: "Approuvée partiellement", 207: "En litige", 208: "Suspendue", 209: "Complétée",
    210: "Refusée", 211: "Paiement transmis", 212: "Encaissée", 213: "Rejetée", 214: "Visée",
}
FINAL_CODES = frozenset({210, 212, 213})
REFUSED_CODES = frozenset({210, 213})
# Codes that ask the seller to act: logged as warnings, with what to do.
ACT_CODES = {
    207: "the buyer disputes the invoice: see the dispute in Qonto and settle it with the "
    "client (a credit note or a corrected invoice if it is upheld)",
    208: "the invoice is suspended: the buyer or the platform asks for something to be "
    "completed; see Qonto for what is missing",
}
# Codes that end an invoice's life badly: logged as errors, with Qonto's reason.
ERROR_CODES = {
    210: "the buyer refused the invoice: contact the client, then issue a credit note or a "
    "corrected invoice",
    213: "the e-invoicing platform rejected the invoice: see its reason, correct the invoice "
    "in the ERP and issue it again (a corrected re-export may keep the same number)",
}
# `einvoicing_status` values that are failures a person must see, whatever the events say.
FAILED_STATUSES = {
    "submission_failed": "the e-invoicing platform did not accept the invoice: see its reason "
    "in Qonto, correct the invoice in the ERP and issue it again",
    "not_delivered": "the invoice could not be delivered to the client: check the client's "
    "e-invoicing address in Qonto, or send the invoice another way",
    "declined": "the client declined the invoice: contact the client, then issue a credit "
    "note or a corrected invoice",
}
REJECTED_HINT = (
    "see the detail: it names what Qonto refused; once it is fixed, run "
    "`qonto-invoice-daemon retry --einvoice PATH`"
)
_CODE_CHARS = 40  # what is kept of a code that is not a number


class HeldFor(StrEnum):
    """Why an e-invoice waits: what must change in Qonto before it can go."""

    ORGANIZATION = "organization"  # e-invoicing not activated, or not allowed to this key
    CLIENT = "client"  # the client is not reachable on the e-invoicing network yet


def label(code: int | str) -> str:
    return LABELS.get(code, "code inconnu") if isinstance(code, int) else "code inconnu"


def parse_code(raw: object) -> int | str | None:
    """A lifecycle code as a number when it reads as one ("210", 210, "210 ", 210.0),
    else the text as it came (cut short); None when there is none."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw < 10_000 else str(raw)[:_CODE_CHARS]
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() and 0 <= raw < 10_000 else str(raw)[:_CODE_CHARS]
    text = str(raw).strip()
    if text.isascii() and text.isdigit() and len(text) <= 4:
        return int(text)
    if text.isascii() and text.endswith(".0") and text[:-2].isdigit() and len(text) <= 6:
        return int(text[:-2])
    return text[:_CODE_CHARS] if text else None


def _text(raw: object, limit: int = 2000) -> str | None:
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else str(raw)
    return text[:limit] or None


def read_events(raw: object) -> list[Event]:
    """Each lifecycle event Qonto sent, in its order; pieces that are not events are
    skipped, codes that are not numbers kept as text."""
    if not isinstance(raw, list):
        return []
    out: list[Event] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        code = parse_code(item.get("status_code"))
        if code is None:
            continue
        out.append(Event(
            code=code, at=_text(item.get("timestamp"), 64), reason=_text(item.get("reason")),
            reason_message=_text(item.get("reason_message")),
        ))
    return out


def merge_events(
    known: Sequence[Event], seen: Sequence[Event]
) -> tuple[tuple[Event, ...], list[Event]]:
    """(the events to keep, the ones that are new). A (code, timestamp) pair is new
    even if the code was seen before (a status can recur: 207, then 209, then 207).
    A known event without a time (recorded before v4) is the next one seen with its
    code: it takes that event's time and reason, and is not new."""
    merged = list(known)
    have: set[tuple[int | str, str | None]] = {(e.code, e.at) for e in known if e.at is not None}
    untimed = {i for i, e in enumerate(known) if e.at is None}
    new: list[Event] = []
    for event in seen:
        if (event.code, event.at) in have:
            continue
        have.add((event.code, event.at))
        same = next((i for i in sorted(untimed) if known[i].code == event.code), None)
        if same is not None:
            untimed.discard(same)
            merged[same] = event
        else:
            merged.append(event)
            new.append(event)
    return tuple(merged), new


def new_events(known: Sequence[Event], seen: Sequence[Event]) -> list[Event]:
    """The events of `seen` not yet in `known` (see merge_events)."""
    return merge_events(known, seen)[1]


def numbers(codes: Iterable[object]) -> set[int]:
    return {c for c in codes if isinstance(c, int) and not isinstance(c, bool)}


class Bucket(StrEnum):
    """Which of `status`'s e-invoice counts an e-invoice falls in."""

    WAITING = "waiting"  # to be sent
    HELD = "held"  # waiting for its organization or its client (checked again)
    SUBMITTED = "submitted"  # accepted by Qonto, not yet received by the platform
    DELIVERED = "delivered"  # received by the platform (202) or later
    ACTION = "action_needed"  # disputed (207) or suspended (208): the seller must act
    REFUSED = "refused"  # refused, rejected, or failed: a person must see it


def bucket(state: EinvoiceState, status: str | None, codes: Sequence[object]) -> Bucket:
    seen = numbers(codes)
    if seen & REFUSED_CODES or status in FAILED_STATUSES:
        return Bucket.REFUSED
    match state:
        case EinvoiceState.REJECTED:
            return Bucket.REFUSED
        case EinvoiceState.PENDING:
            return Bucket.WAITING
        case EinvoiceState.HELD:
            return Bucket.HELD
        case EinvoiceState.SUBMITTED | EinvoiceState.FINAL:
            last = [c for c in codes if isinstance(c, int)][-1:]
            if last and last[0] in ACT_CODES:
                return Bucket.ACTION
            return Bucket.DELIVERED if any(c >= 202 for c in seen) else Bucket.SUBMITTED


def platform_rejected(
    state: EinvoiceState, status: str | None, codes: Sequence[object], held_for: str | None
) -> bool:
    """Rejected by the platform (213), a failed submission, or refused by Qonto when
    it was sent: the invoice never reached its buyer, and a corrected re-export is the
    expected fix. Not a buyer's refusal (210, `declined`: a credit note), not an
    invoice the platform delivered (`not_delivered` comes after it accepted it), not
    one held too long for its client (`retry --einvoice` sends it)."""
    refused_at_send = state is EinvoiceState.REJECTED and held_for is None
    return 213 in numbers(codes) or status == "submission_failed" or refused_at_send


def einvoice_counts(
    summaries: Iterable[tuple[str, EinvoiceState, str | None, Sequence[object]]],
) -> dict[str, dict[str, int]]:
    """Per organization, every bucket's count."""
    out: dict[str, dict[str, int]] = {}
    for org, state, status, codes in summaries:
        out.setdefault(org, dict.fromkeys(Bucket, 0))[bucket(state, status, codes)] += 1
    return out
