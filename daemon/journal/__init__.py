"""The journal: the SQLite file that is the durable truth about every file's content.

`commits` is the engine (one connection, group commit, a full disk waited
out); `schema` the tables and their migrations; `invoices`, `einvoices` and
`orgs` the operations on each table family, joined here in one `Journal`.
"""

from __future__ import annotations

from .einvoices import Einvoice, Einvoices, EinvoiceState
from .invoices import Invoices, Record, State
from .orgs import Organizations
from .schema import SCHEMA_VERSION


class Journal(Invoices, Einvoices, Organizations):
    """One long-lived connection; open with `await Journal.open(path)`."""


__all__ = [
    "SCHEMA_VERSION", "Einvoice", "EinvoiceState", "Journal", "Record", "State",
]
