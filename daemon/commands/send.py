"""`send-einvoice`: send invoices this daemon already imported through Qonto's e-invoicing.

For an invoice imported from a folder without `send_by_einvoice` (or before it
was turned on): by its file (wherever it is now, a done/ folder included) or by
its invoice_id. The running daemon sends it within a minute, as it does after
`retry --einvoice`; a stopped one, at its next start. An invoice is sent once:
one already submitted is left as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .. import logs
from ..config import Config
from ..journal import Journal, Record, State
from .common import EX_FAILED, EX_OK, EX_USAGE, hash_file, org_of

_IMPORTED = (State.IMPORTED, State.DONE)


def _say(problem: str) -> None:
    print(f"qonto-invoice-daemon: send-einvoice: {problem}", file=sys.stderr)


async def send_einvoices(
    cfg: Config, paths: Sequence[Path], invoice_ids: Sequence[str], org: str | None
) -> int:
    logins = [o.key for o in cfg.organizations]
    if org is not None and org not in logins:
        _say(f"--org {org}: not an organization of this configuration ({', '.join(logins)})")
        return EX_USAGE
    if invoice_ids and org is None and len(logins) > 1:
        _say("--invoice-id needs --org LOGIN: this configuration has several organizations")
        return EX_USAGE
    journal = await Journal.open(cfg.database)
    status = EX_OK
    try:
        targets: list[tuple[str, Record | None]] = []
        for invoice_id in invoice_ids:
            targets.append((invoice_id, await journal.by_invoice_id(org or logins[0], invoice_id)))
        for path in paths:
            shown = logs.printable(str(path))
            content = await hash_file(path)
            if isinstance(content, str):
                _say(f"{shown}: cannot read: {content}")
                status = EX_FAILED
                continue
            owner = org or org_of(cfg, path)
            rows = [r for r in await journal.find(content.sha256)
                    if r.invoice_id and r.state in _IMPORTED and owner in (None, r.org)]
            if len(rows) > 1:
                _say(f"{shown}: imported by several organizations; name one with --org")
                status = EX_FAILED
                continue
            targets.append((shown, rows[0] if rows else None))
        for shown, record in targets:
            if record is None or record.invoice_id is None or record.state not in _IMPORTED:
                _say(f"{shown}: not an invoice this daemon imported (see `lookup`)")
                status = EX_FAILED
                continue
            before = await journal.request_einvoice(
                record.org, record.invoice_id, record.sha256, record.path
            )
            if before is None:
                print(f"will send: {shown} (invoice_id {record.invoice_id})")
            else:
                print(f"already {before}: {shown} (invoice_id {record.invoice_id})")
    finally:
        await journal.close()
    return status
