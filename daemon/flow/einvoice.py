"""Step 8: sending imported invoices by e-invoice, then following their lifecycle.

For folders with `send_by_einvoice = true`, the journal records the intent
to send in the same transaction as the invoice_id (journal.record_imported),
so a crash can neither lose a send nor repeat one that was answered: each
e-invoice's state (pending, submitted, rejected, final) is committed before
the next step. `send_by_einvoice` is safe to call twice (Qonto documents it),
which covers only the instant between Qonto's answer and our commit.

Submitted invoices are looked at with `GET /v2/client_invoices/{id}` on a
schedule that starts at `poll_initial_seconds` and doubles up to
`poll_max_seconds`, until a final lifecycle code (210 refused, 212 paid,
213 rejected) or `track_days`. One request at a time, on its own: uploads
never wait for it, and it takes at most half of the rate limits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from ..aio import wait_first
from ..backoff import next_delay
from ..config import EinvoicingConfig, UploadConfig
from ..errors import AuthProblem, Rejected, Transient
from ..journal import Einvoice, EinvoiceState, Journal
from ..timing import DEFAULT, Intervals
from .orgs import Org

log = structlog.get_logger()

# The French reform's lifecycle codes (as Qonto reports them).
LABELS = {
    200: "Déposée", 201: "Émise par la plateforme", 202: "Reçue par la plateforme",
    203: "Mise à disposition", 204: "Prise en charge", 205: "Approuvée",
    206: "Approuvée partiellement", 207: "En litige", 208: "Suspendue", 209: "Complétée",
    210: "Refusée", 211: "Paiement transmis", 212: "Encaissée", 213: "Rejetée",
}
FINAL_CODES = frozenset({210, 212, 213})
ERROR_CODES = {
    210: "the buyer refused the invoice: contact the client, then issue a credit note or a "
    "corrected invoice",
    213: "the e-invoicing platform rejected the invoice: see its detail in Qonto, correct the "
    "invoice in the ERP and issue it again",
}
REJECTED_HINT = (
    "check in Qonto that e-invoicing is activated, that the organization is registered in the "
    "directory (Annuaire) and that the client is reachable on the e-invoicing network; then "
    "run `qonto-invoice-daemon retry --einvoice PATH`"
)
_DUE_BATCH = 100

class Einvoicing:
    def __init__(
        self,
        *,
        journal: Journal,
        orgs: Mapping[str, Org],
        settings: EinvoicingConfig,
        upload: UploadConfig,
        stopping: asyncio.Event,
        rng: random.Random | None = None,
        intervals: Intervals = DEFAULT,
    ) -> None:
        self._journal = journal
        self._orgs = orgs
        self._settings = settings
        self._upload = upload
        self._stopping = stopping
        self._rng = rng or random.Random()
        self._intervals = intervals

    async def run(self) -> None:
        woken = [org.einvoices_recorded for org in self._orgs.values()]
        while not self._stopping.is_set():
            for event in woken:
                event.clear()
            # Organizations not paused: another's rows never block them.
            active = [key for key, org in self._orgs.items() if not org.paused]
            due = await self._journal.einvoices_due(active, time.time(), _DUE_BATCH)
            for e in due:
                if self._stopping.is_set():
                    return
                org = self._orgs[e.org]
                if org.paused:  # paused by an answer in this round
                    continue
                if e.state is EinvoiceState.PENDING:
                    await self._send(e, org)
                else:
                    await self._track(e, org)
            if len(due) == _DUE_BATCH:
                continue
            # A pause ends by the clock: look again soon while one lasts.
            wait_s = (
                self._intervals.einvoice_paused_s if len(active) < len(self._orgs)
                else self._intervals.einvoice_recheck_s
            )
            next_at = await self._journal.next_einvoice_at(active)
            if next_at is not None:
                wait_s = min(wait_s, max(0.0, next_at - time.time()))
            if wait_s > 0 or not due:
                await wait_first(self._stopping, *woken, timeout_s=max(wait_s, 0.05))

    async def _where(self, e: Einvoice) -> Any:
        record = await self._journal.get(e.org, e.sha256)
        return record.path if record is not None else None

    async def _send(self, e: Einvoice, org: Org) -> None:
        bound = log.bind(org=e.org, invoice_id=e.invoice_id, path=await self._where(e))
        try:
            await org.client.send_by_einvoice(e.invoice_id)
        except Transient as exc:
            await self._later(e, exc, bound, "einvoice_send_retry")
            return
        except AuthProblem as exc:
            await org.refused(exc)  # 401/403: e-invoices and uploads alike
            return
        except Rejected as exc:
            await self._journal.update_einvoice(
                e, state=EinvoiceState.REJECTED, detail=exc.detail, attempts=e.attempts + 1
            )
            bound.error("einvoice_rejected", status=exc.status, code=exc.code, detail=exc.detail,
                        hint=REJECTED_HINT)
            return
        now = time.time()
        await self._journal.update_einvoice(
            e, state=EinvoiceState.SUBMITTED, detail=None, attempts=e.attempts + 1,
            submitted_at=_iso(now), next_at=now + self._settings.poll_initial_s,
        )
        bound.info("einvoice_submitted", next_check_s=self._settings.poll_initial_s)

    async def _track(self, e: Einvoice, org: Org) -> None:
        bound = log.bind(org=e.org, invoice_id=e.invoice_id)
        try:
            invoice = await org.client.client_invoice(e.invoice_id)
        except Transient as exc:
            await self._later(e, exc, bound, "einvoice_check_retry")
            return
        except AuthProblem as exc:
            await org.refused(exc)  # 401/403: e-invoices and uploads alike
            return
        except Rejected as exc:
            if exc.status != 404:  # not a refusal to act on: look again later
                await self._later(e, Transient(str(exc), status=exc.status), bound,
                                  "einvoice_check_retry")
                return
            # Deleted in Qonto: nothing more to follow.
            await self._journal.update_einvoice(e, state=EinvoiceState.FINAL, detail=exc.detail)
            bound.error("einvoice_tracking_stopped", status=exc.status, detail=exc.detail,
                        path=await self._where(e),
                        hint="the invoice cannot be read in Qonto any more (deleted?)")
            return
        now = time.time()
        status = invoice.get("einvoicing_status")
        status = None if status is None else str(status)  # stored as it comes
        seen = set(e.codes)
        new: list[tuple[int, str]] = []
        for code, when in _events(invoice.get("einvoicing_lifecycle_events"), now):
            if code not in seen:
                seen.add(code)
                new.append((code, when))
        checks = e.checks + 1
        ended = bool(FINAL_CODES & seen)
        expired = _tracked_since(e, now) >= self._settings.track_days * 86400
        interval_s = poll_interval_s(self._settings, checks)
        await self._journal.update_einvoice(
            e, state=EinvoiceState.FINAL if ended or expired else EinvoiceState.SUBMITTED,
            einvoicing_status=status,
            lifecycle=e.lifecycle + tuple(new), checks=checks, attempts=0,
            next_at=now + interval_s,
        )
        path = await self._where(e) if new else None
        for code, when in new:
            fields = dict(code=code, label=LABELS.get(code, "code inconnu"),
                          einvoicing_status=status, at=when, path=path)
            if code in ERROR_CODES:
                bound.error("einvoice_status_changed", hint=ERROR_CODES[code], **fields)
            else:
                bound.info("einvoice_status_changed", **fields)
        if expired and not ended:
            bound.info("einvoice_tracking_ended", track_days=self._settings.track_days,
                       einvoicing_status=status, codes=sorted(seen))

    async def _later(self, e: Einvoice, exc: Transient, bound: Any, event: str) -> None:
        delay_s = next_delay(
            e.attempts, exc.retry_after_s, self._rng,
            initial_s=self._upload.backoff_initial_s, max_s=self._upload.backoff_max_s,
        )
        await self._journal.update_einvoice(
            e, attempts=e.attempts + 1, next_at=time.time() + delay_s
        )
        bound.warning(event, error=str(exc), status=exc.status, attempt=e.attempts + 1,
                      delay_s=round(delay_s, 2))


def poll_interval_s(settings: EinvoicingConfig, checks: int) -> float:
    """After `checks` looks: from poll_initial_seconds, doubling, up to poll_max_seconds."""
    return min(settings.poll_initial_s * 2.0 ** min(checks, 60), settings.poll_max_s)


def _events(raw: object, now: float) -> list[tuple[int, str]]:
    """(code, when) of each readable lifecycle event, in the order given."""
    out: list[tuple[int, str]] = []
    if not isinstance(raw, list):
        return out
    for event in raw:
        if not isinstance(event, dict):
            continue
        code = event.get("status_code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if not isinstance(code, int) or isinstance(code, bool):
            continue
        when = next((str(event[k]) for k in ("occurred_at", "created_at", "date")
                     if event.get(k)), _iso(now))
        out.append((code, when))
    return out


def _tracked_since(e: Einvoice, now: float) -> float:
    if e.submitted_at is None:
        return 0.0
    try:
        return now - datetime.fromisoformat(e.submitted_at).timestamp()
    except ValueError:
        return 0.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class Bucket(StrEnum):
    """Which of `status`'s e-invoice counts an e-invoice falls in."""

    WAITING = "waiting"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    REFUSED = "refused"


REFUSED_CODES = frozenset({210, 213})


def bucket(state: EinvoiceState, codes: Sequence[int]) -> Bucket:
    if REFUSED_CODES.intersection(codes):
        return Bucket.REFUSED
    match state:
        case EinvoiceState.REJECTED:
            return Bucket.REFUSED
        case EinvoiceState.PENDING:
            return Bucket.WAITING
        case EinvoiceState.SUBMITTED | EinvoiceState.FINAL:
            return Bucket.DELIVERED if any(c >= 202 for c in codes) else Bucket.SUBMITTED


def einvoice_counts(
    summaries: Iterable[tuple[str, EinvoiceState, list[int]]],
) -> dict[str, dict[str, int]]:
    """Per organization: waiting, submitted, delivered (202 or later), refused."""
    out: dict[str, dict[str, int]] = {}
    for org, state, codes in summaries:
        out.setdefault(org, dict.fromkeys(Bucket, 0))[bucket(state, codes)] += 1
    return out
