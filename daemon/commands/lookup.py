"""`lookup`: what the journal knows of files, by their content."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import logs
from ..config import Config
from ..journal import Journal
from ..redact import Redactor
from .common import EX_FAILED, EX_OK, hash_file, org_of, printable


async def lookup(cfg: Config, paths: Sequence[Path], *, as_json: bool) -> int:
    """Hash each file and print what the journal knows of its content."""
    status = EX_OK
    redact = Redactor(cfg.secret_values())  # journals written by older versions may hold one
    rows: list[dict[str, object]] = []
    journal = await Journal.open_readonly(cfg.database)
    for token in await journal.refresh_tokens() if journal else []:
        redact.add(token)
    try:
        for path in paths:
            content = await hash_file(path)
            if isinstance(content, str):
                print(f"{logs.printable(str(path))}: cannot read: {content}", file=sys.stderr)
                status = EX_FAILED
                continue
            org = org_of(cfg, path)
            records = await journal.find(content.sha256) if journal else []
            # Prefer the row of the organization whose folder holds the file.
            records = [r for r in records if org is None or r.org == org]
            records.sort(key=lambda r: r.invoice_id is None)
            r = records[0] if records else None
            einvoices = await journal.einvoices_of(r.org, r.sha256) if journal and r else []
            einvoice = einvoices[0] if einvoices else None
            rows.append({
                "path": logs.printable(str(path)),
                "sha256": content.sha256,
                "invoice_id": r.invoice_id if r else None,
                "state": r.state if r else "unknown",
                "organization": r.org if r else org,
                "last_error": redact(r.last_error) if r and r.last_error else None,
                "updated_at": r.updated_at if r else None,
                # What the invoice XML said (flavor, profile, number, seller...), if read.
                "facturx": r.facts if r else None,
                # What the business rules said (verdict, fatal and warning rule ids, each
                # finding with its text and location, the rule versions), if checked.
                "rules": r.rules if r else None,
                # Qonto's trace_id with the last error (its support asks for it).
                "trace_id": (r.trace_id if r else None) or (
                    einvoice.trace_id if einvoice else None),
                # Sent by e-invoice: none (its folder does not send), pending, held,
                # submitted, rejected, final; why it is held (organization, client);
                # Qonto's einvoicing_status; the lifecycle codes seen, and each event
                # as Qonto sent it, oldest first.
                "einvoice_state": einvoice.state if einvoice else "none",
                "einvoice_held_for": einvoice.held_for if einvoice else None,
                "einvoice_detail": redact(einvoice.detail) if einvoice and einvoice.detail
                else None,
                "einvoicing_status": einvoice.einvoicing_status if einvoice else None,
                "einvoice_lifecycle": einvoice.codes if einvoice else [],
                "einvoice_events": [e.as_json() for e in einvoice.events] if einvoice else [],
            })
    finally:
        if journal is not None:
            await journal.close()
    for row in rows:
        row = {k: printable(v) for k, v in row.items()}
        if as_json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            state = row["state"]
            invoice = row["invoice_id"] or "-"
            print(f"{row['path']}\t{row['sha256']}\t{state}\t{invoice}", flush=True)
    return status
