"""Step 8: sending imported invoices by e-invoice, then following their lifecycle.

For folders with `send_by_einvoice = true` the journal records the intent to
send with the invoice_id (journal.record_imported), so a crash can neither
lose a send nor repeat one that was answered: each e-invoice's state is
committed before the next step. `send_by_einvoice` is safe to call twice
(Qonto documents it), which covers the instant between Qonto's answer and
our commit.

Before a send, what Qonto lets a client read is checked: the organization's
`sending_status` (GET /v2/einvoicing/settings) and the client's
`e_invoicing_reachable` (GET /v2/clients/{id}). An e-invoice that cannot go
yet is held, checked again every `recheck_seconds`, and sent by itself once it
can, up to `track_days` after its import. Where those reads are refused (a key
without the scope), the send goes and its refusal is judged. Nothing here ever
pauses uploads.

Submitted invoices are looked at with `GET /v2/client_invoices/{id}` on a
schedule from `poll_initial_seconds`, doubling up to `poll_max_seconds`, until
a final code (210, 212, 213), a failing `einvoicing_status`, or `track_days`.
One request at a time: uploads never wait for it, and it takes at most half
of the rate limits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from ..aio import wait_event, wait_first
from ..backoff import next_delay
from ..config import EinvoicingConfig, Folder, UploadConfig
from ..errors import AuthProblem, NotYet, QontoError, Rejected, Transient
from ..journal import Einvoice, EinvoiceState, Journal
from ..timing import DEFAULT, MONOTONIC, Clock, Intervals
from .lifecycle import (
    ACT_CODES,
    ERROR_CODES,
    FAILED_STATUSES,
    FINAL_CODES,
    REJECTED_HINT,
    HeldFor,
    label,
    merge_events,
    numbers,
    read_events,
)
from .orgs import Org

log = structlog.get_logger()
# Why an e-invoice waits, what Qonto said (and its trace_id), and whether that is
# Qonto's answer just now (True) or what an earlier answer said (False).
Held = tuple[HeldFor, str, str | None, bool]
_DUE_BATCH = 100
_STATUS_CHARS = 64
SENDING_ENABLED = "enabled"
HELD_HINTS = {
    HeldFor.ORGANIZATION: "activate e-invoicing for the organization in Qonto (Settings > "
    "E-invoicing) and check that the key or OAuth consent may send e-invoices; held "
    "e-invoices are sent by themselves once it is",
    HeldFor.CLIENT: "the client is not reachable on the e-invoicing network yet (not in the "
    "directory): it is sent by itself once the client is; or send it another way and "
    "leave it",
}


class Einvoicing:
    def __init__(
        self,
        *,
        journal: Journal,
        orgs: Mapping[str, Org],
        settings: EinvoicingConfig,
        upload: UploadConfig,
        stopping: asyncio.Event,
        folders: Sequence[Folder] = (),
        rng: random.Random | None = None,
        intervals: Intervals = DEFAULT,
        clock: Clock = time.time,
    ) -> None:
        self._journal = journal
        self._folders = folders
        self._orgs = orgs
        self._settings = settings
        self._upload = upload
        self._stopping = stopping
        self._rng = rng or random.Random()
        self._intervals = intervals
        self._clock = clock  # wall-clock: next_at survives restarts
        # Organizations whose e-invoicing is held, until when (wall-clock), and why.
        self._org_held: dict[str, tuple[float, str]] = {}
        self._settings_read: dict[str, float] = {}  # when each one's settings were read
        self._clients: dict[tuple[str, str], tuple[float, bool]] = {}  # reachable, when read

    async def run(self, *, once: bool = False) -> None:
        """Send, hold and follow until the daemon stops; with `once`, what is due now
        and no more (held and submitted ones wait for their time, or the next run)."""
        woken = [org.einvoices_recorded for org in self._orgs.values()]
        await self._drop_unwanted()
        while not self._stopping.is_set():
            for event in woken:
                event.clear()
            # Organizations whose uploads are refused would be refused here too.
            active = [key for key, org in self._orgs.items() if not org.paused]
            due = await self._journal.einvoices_due(active, self._clock(), _DUE_BATCH)
            for e in due:
                if self._stopping.is_set():
                    return
                if self._orgs[e.org].paused:  # paused by an upload meanwhile
                    continue
                match e.state:
                    case EinvoiceState.PENDING | EinvoiceState.HELD:
                        await self._send(e, self._orgs[e.org])
                    case EinvoiceState.SUBMITTED:
                        await self._track(e, self._orgs[e.org])
                    case EinvoiceState.REJECTED | EinvoiceState.FINAL:
                        pass
            if len(due) == _DUE_BATCH:
                continue
            if once:  # what was due is done; the rest waits for its time (or the next run)
                return
            # A pause ends by the clock: look again soon while one lasts.
            wait_s = (
                self._intervals.einvoice_paused_s if len(active) < len(self._orgs)
                else self._intervals.einvoice_recheck_s
            )
            next_at = await self._journal.next_einvoice_at(active)
            if next_at is not None:
                wait_s = min(wait_s, max(0.0, next_at - self._clock()))
            if wait_s > 0 or not due:
                await wait_first(self._stopping, *woken, timeout_s=max(wait_s, 0.05))

    async def send_before_exit(self, give_up_s: float) -> bool:
        """`run --once`: send what is due, and again after transient errors as uploads
        are retried, for up to `give_up_s`; whether nothing is left unsent. Held ones
        wait for the next run (each said by einvoice_held)."""
        orgs = list(self._orgs)
        give_up_at = MONOTONIC() + give_up_s
        while True:
            await self.run(once=True)
            left = await self._journal.einvoices_in(EinvoiceState.PENDING, orgs)
            retry = [e for e in left if not self._orgs[e.org].paused]
            if not left:
                return True
            if not retry or MONOTONIC() >= give_up_at or self._stopping.is_set():
                break
            wait_s = min(max(0.0, min(e.next_at for e in retry) - self._clock()),
                         max(0.0, give_up_at - MONOTONIC()))
            await wait_event(self._stopping, wait_s)
        log.error(
            "einvoices_left", count=len(left), invoice_ids=[e.invoice_id for e in left[:20]],
            detail=f"{len(left)} e-invoice(s) could not be sent in this run (Qonto did not "
            "take them, or their organization is paused)",
            hint="they are sent at the next run; see the einvoice_send_retry and org_paused "
            "lines for why",
        )
        return False

    async def _drop_unwanted(self) -> None:
        """E-invoices asked for by a folder that no longer sends by e-invoice, and not
        sent yet, are not sent: the folder's current setting decides. Said once, per
        folder. (Those asked for with `send-einvoice`, from no inbox, stay.)"""
        if not self._folders:
            return
        by_inbox = {f.inbox: f for f in self._folders}
        waiting = []
        for state in (EinvoiceState.PENDING, EinvoiceState.HELD):
            waiting += await self._journal.einvoices_in(state, list(self._orgs))
        dropped: dict[Path, list[Einvoice]] = {}
        for e in waiting:
            folder = by_inbox.get(e.path.parent) if e.path is not None else None
            if folder is not None and not folder.send_by_einvoice:
                dropped.setdefault(folder.inbox, []).append(e)
        for inbox, those in dropped.items():
            for e in those:
                await self._journal.forget_einvoice(e.org, e.invoice_id)
            log.warning(
                "einvoices_dropped", inbox=inbox, count=len(those),
                invoice_ids=[e.invoice_id for e in those[:20]],
                detail=f"{len(those)} e-invoice(s) asked for by this folder were not sent "
                "yet, and it no longer has send_by_einvoice = true: they are not sent",
                hint="to send them after all, use send-einvoice with their files in done/",
            )

    async def _path(self, e: Einvoice) -> Path | None:
        """The file the e-invoice was asked for (rows from before v4: the content's file)."""
        if e.path is not None:
            return e.path
        record = await self._journal.get(e.org, e.sha256)
        return record.path if record is not None else None

    # -- sending -----------------------------------------------------------------------

    async def _send(self, e: Einvoice, org: Org) -> None:
        bound = log.bind(org=e.org, invoice_id=e.invoice_id, path=await self._path(e))
        now = self._clock()
        if e.state is EinvoiceState.HELD and _age_s(e.created_at, now) >= self._days_s:
            await self._journal.update_einvoice(e, state=EinvoiceState.REJECTED)
            bound.error("einvoice_rejected", status=None, code="held_too_long",
                        detail=f"held for its {e.held_for} for {self._settings.track_days:g} "
                        f"days: {e.detail}", trace_id=e.trace_id, hint=REJECTED_HINT)
            return
        try:
            held, client_id = await self._prerequisites(e, org)
            e = replace(e, client_id=client_id)  # kept with whatever is written next
            if held is not None:
                await self._hold(e, held, bound)
                return
            await org.client.send_by_einvoice(e.invoice_id)
        except Transient as exc:
            await self._later(e, exc, bound, "einvoice_send_retry")
            return
        except (NotYet, AuthProblem) as exc:
            # AuthProblem: credentials refused on the way (an OAuth token): the
            # organization's e-invoicing waits, its uploads say it for themselves.
            held_for = HeldFor(exc.held_for) if isinstance(exc, NotYet) else HeldFor.ORGANIZATION
            await self._hold(e, (held_for, str(exc), exc.trace_id, True), bound)
            return
        except Rejected as exc:
            await self._journal.update_einvoice(
                e, state=EinvoiceState.REJECTED, detail=exc.detail, attempts=e.attempts + 1,
                trace_id=exc.trace_id,
            )
            bound.error("einvoice_rejected", status=exc.status, code=exc.code, detail=exc.detail,
                        trace_id=exc.trace_id, hint=REJECTED_HINT)
            return
        self._org_held.pop(e.org, None)
        now = self._clock()
        await self._journal.update_einvoice(
            e, state=EinvoiceState.SUBMITTED, detail=None, attempts=e.attempts + 1,
            held_for=None, trace_id=None, submitted_at=_iso(now),
            next_at=now + self._settings.poll_initial_s,
        )
        was = {"was_held_for": e.held_for} if e.held_for else {}
        bound.info("einvoice_submitted", next_check_s=self._settings.poll_initial_s, **was)

    async def _prerequisites(
        self, e: Einvoice, org: Org
    ) -> tuple[Held | None, str | None]:
        """(why the e-invoice cannot go now, or None: send it and judge the answer;
        the invoice's client id, once known).

        Reads that Qonto refuses this key (403/404) say nothing: the send decides.
        """
        now = self._clock()
        client_id = e.client_id
        held = self._org_held.get(e.org)
        if held is not None and now < held[0]:
            # Known to be held: no request until the organization is read again.
            return (HeldFor.ORGANIZATION, held[1], None, False), client_id
        if now - self._settings_read.get(e.org, -1e18) >= self._settings.recheck_s:
            settings = await _readable(org.client.einvoicing_settings())
            self._settings_read[e.org] = now
            sending = settings.get("sending_status") if settings is not None else None
            if isinstance(sending, str) and sending != SENDING_ENABLED:
                why = f"e-invoicing sending_status is {sending[:_STATUS_CHARS]!r}"
                return (HeldFor.ORGANIZATION, why, None, True), client_id
        if client_id is None:
            invoice = await _readable(org.client.client_invoice(e.invoice_id))
            client = invoice.get("client") if invoice is not None else None
            found = client.get("id") if isinstance(client, dict) else None
            if isinstance(found, str | int) and not isinstance(found, bool) and str(found):
                client_id = str(found)[:_STATUS_CHARS]
        if client_id is None:
            return None, None
        reachable = self._clients.get((e.org, client_id))
        if reachable is None or now - reachable[0] >= self._settings.recheck_s:
            client = await _readable(org.client.client(client_id))
            value = client.get("e_invoicing_reachable") if client is not None else None
            if not isinstance(value, bool):
                return None, client_id
            reachable = self._clients[(e.org, client_id)] = (now, value)
        if not reachable[1]:
            why = f"client {client_id}: e_invoicing_reachable is false"
            return (HeldFor.CLIENT, why, None, True), client_id
        return None, client_id

    async def _hold(self, e: Einvoice, held: Held, bound: Any) -> None:
        """Wait for the organization or the client; one error line when it becomes held."""
        held_for, detail, trace_id, fresh = held
        now = self._clock()
        newly = e.state is not EinvoiceState.HELD or e.held_for != held_for
        if held_for is HeldFor.ORGANIZATION:
            # The organization as a whole: said once, not once per invoice; and only
            # Qonto's own answer starts a new hold (a hold never extends itself).
            newly = newly and e.org not in self._org_held
            if fresh:
                self._org_held[e.org] = (now + self._settings.recheck_s, detail)
        await self._journal.update_einvoice(
            e, state=EinvoiceState.HELD, held_for=held_for, detail=detail, trace_id=trace_id,
            attempts=0, next_at=now + self._settings.recheck_s,
        )
        if newly:
            bound.error("einvoice_held", held_for=held_for, detail=detail, trace_id=trace_id,
                        recheck_s=self._settings.recheck_s, hint=HELD_HINTS[held_for])

    # -- following -----------------------------------------------------------------------

    async def _track(self, e: Einvoice, org: Org) -> None:
        bound = log.bind(org=e.org, invoice_id=e.invoice_id)
        if _age_s(e.submitted_at, self._clock()) >= self._days_s:
            # Past track_days, whatever the last look said (refused, unanswered): over.
            await self._journal.update_einvoice(e, state=EinvoiceState.FINAL)
            bound.info("einvoice_tracking_ended", track_days=self._settings.track_days,
                       einvoicing_status=e.einvoicing_status, codes=[x.code for x in e.events])
            return
        try:
            invoice = await org.client.client_invoice(e.invoice_id)
        except Transient as exc:
            await self._later(e, exc, bound, "einvoice_check_retry")
            return
        except (NotYet, AuthProblem) as exc:
            # Reading is refused (the consent or the scope changed): looked at later.
            await self._journal.update_einvoice(
                e, detail=str(exc), trace_id=exc.trace_id,
                next_at=self._clock() + self._settings.recheck_s,
            )
            bound.warning("einvoice_check_retry", error=str(exc), status=exc.status,
                          trace_id=exc.trace_id, delay_s=self._settings.recheck_s)
            return
        except Rejected as exc:  # gone (deleted in Qonto: 404, 410) or never to be read
            await self._journal.update_einvoice(e, state=EinvoiceState.FINAL, detail=exc.detail,
                                                trace_id=exc.trace_id)
            bound.error("einvoice_tracking_stopped", status=exc.status, detail=exc.detail,
                        trace_id=exc.trace_id, path=await self._path(e),
                        hint="the invoice cannot be read in Qonto any more (deleted?)")
            return
        await self._follow(e, invoice, bound)

    async def _follow(self, e: Einvoice, invoice: dict[str, Any], bound: Any) -> None:
        now = self._clock()
        raw_status = invoice.get("einvoicing_status")
        status = None if raw_status is None else str(raw_status)[:_STATUS_CHARS]
        events, new = merge_events(
            e.events, read_events(invoice.get("einvoicing_lifecycle_events"))
        )
        codes = numbers(x.code for x in events)
        failed = status in FAILED_STATUSES
        ended = bool(FINAL_CODES & codes) or failed
        expired = _age_s(e.submitted_at, now) >= self._days_s
        checks = e.checks + 1
        await self._journal.update_einvoice(
            e, state=EinvoiceState.FINAL if ended or expired else EinvoiceState.SUBMITTED,
            einvoicing_status=status, events=events, checks=checks, attempts=0,
            next_at=now + poll_interval_s(self._settings, checks), detail=None, trace_id=None,
        )
        path = await self._path(e) if new or failed else None
        for event in new:
            fields: dict[str, Any] = dict(
                code=event.code, label=label(event.code), einvoicing_status=status,
                at=event.at, path=path,
            )
            if event.reason or event.reason_message:  # why a buyer or the platform said no
                fields.update(reason=event.reason, reason_message=event.reason_message)
            if event.code in ERROR_CODES:
                bound.error("einvoice_status_changed", hint=ERROR_CODES[event.code], **fields)
            elif event.code in ACT_CODES:
                bound.warning("einvoice_status_changed", hint=ACT_CODES[event.code], **fields)
            else:
                bound.info("einvoice_status_changed", **fields)
        if failed and e.einvoicing_status != status:
            why = next((x for x in reversed(events) if x.reason or x.reason_message), None)
            bound.error(
                "einvoice_failed", path=path, einvoicing_status=status,
                reason=why.reason if why else None,
                reason_message=why.reason_message if why else None,
                hint=FAILED_STATUSES[status or ""],
            )
        elif expired and not ended:
            bound.info("einvoice_tracking_ended", track_days=self._settings.track_days,
                       einvoicing_status=status, codes=[x.code for x in events])

    async def _later(self, e: Einvoice, exc: QontoError, bound: Any, event: str) -> None:
        retry_after = exc.retry_after_s if isinstance(exc, Transient) else None
        delay_s = next_delay(
            e.attempts, retry_after, self._rng,
            initial_s=self._upload.backoff_initial_s, max_s=self._upload.backoff_max_s,
        )
        await self._journal.update_einvoice(
            e, attempts=e.attempts + 1, next_at=self._clock() + delay_s, trace_id=exc.trace_id
        )
        bound.warning(event, error=str(exc), status=exc.status, attempt=e.attempts + 1,
                      delay_s=round(delay_s, 2), trace_id=exc.trace_id)

    @property
    def _days_s(self) -> float:
        return self._settings.track_days * 86400


async def _readable(read: Any) -> dict[str, Any] | None:
    """A prerequisite's read, or None when Qonto will not say (refused, not found,
    unreadable): the send then decides."""
    try:
        found = await read
    except (Rejected, NotYet, AuthProblem, Transient):
        return None
    return found if isinstance(found, dict) else None


def poll_interval_s(settings: EinvoicingConfig, checks: int) -> float:
    """After `checks` looks: from poll_initial_seconds, doubling, up to poll_max_seconds."""
    return min(settings.poll_initial_s * 2.0 ** min(checks, 60), settings.poll_max_s)


def _age_s(iso: str | None, now: float) -> float:
    if iso is None:
        return 0.0
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return now - then.timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
