"""Step 4: what a PDF's invoice XML says, and what the business rules say of it.

Both run in worker processes (`parsers.py`, `validator.py`): untrusted PDFs and
XML are read where a time and memory limit apply. The run and the dry run read
files the same way, through one `Reader`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import structlog

from ..config import Config, FacturxPolicy, Folder, RulesPolicy
from ..invoice_xml import Invoice
from ..parsers import ParserPool
from ..validator import RulesPool
from .records import Content, Inspection, Kind
from .rules import RulesVerdict, judge, recorded, with_profile

log = structlog.get_logger()


@dataclass(frozen=True)
class Read:
    """What reading a file found: its invoice XML (None when there is none, or it
    was not read), why it could not be read, and the rules' verdict (None when they
    did not run)."""

    invoice: Invoice | None = None
    unreadable: str | None = None
    rules: RulesVerdict | None = None


def pools(cfg: Config) -> tuple[ParserPool | None, RulesPool | None]:
    """The worker pools the configuration's folders need (none start a process yet)."""
    val = cfg.validation
    rules = any(f.rules is not RulesPolicy.OFF for f in cfg.folders)
    parses = rules or any(f.facturx is not FacturxPolicy.OFF for f in cfg.folders)
    return (
        ParserPool(val.parse_workers, val.parse_timeout_s, val.parse_memory_mb)
        if parses else None,
        RulesPool(val.rules_workers, val.rules_timeout_s, val.rules_memory_mb, val.rules_idle_s)
        if rules else None,
    )


class Reader:
    def __init__(
        self,
        parsers: ParserPool | None,
        rules: RulesPool | None,
        stopping: asyncio.Event,
        today: Callable[[], date] = date.today,
    ) -> None:
        self._parsers = parsers
        self._rules = rules
        self._stopping = stopping
        self._today = today

    def checks_rules(self, folder: Folder) -> bool:
        return self._rules is not None and folder.rules is not RulesPolicy.OFF

    def parses(self, folder: Folder) -> bool:
        """Whether this folder's PDFs are read by a parser."""
        return self._parsers is not None and (
            folder.facturx is not FacturxPolicy.OFF or self.checks_rules(folder)
        )

    async def read(
        self, folder: Folder, path: Path, found: Inspection, content: Content
    ) -> Read | None:
        """What a complete PDF's XML says and what the rules say of it; None when the
        daemon stops first. Raises ParserUnavailable (not the file's fault)."""
        if (
            not self.parses(folder) or found.problem is not None
            or found.kind is not Kind.PDF or not found.complete
        ):
            return Read()
        assert self._parsers is not None
        log.debug("file_parsing", path=path, sha256=found.sha256)
        rules = self.checks_rules(folder)
        parsed = await self._parsers.read(content.data, self._stopping, keep_xml=rules)
        if parsed is None:
            return None
        if isinstance(parsed, str):
            return Read(unreadable=parsed)
        if parsed.xml is None:
            return Read(invoice=parsed)
        assert self._rules is not None
        log.debug("rules_checking", path=path, sha256=found.sha256, profile=parsed.profile)
        report = await self._rules.check(
            parsed.xml, parsed.profile, parsed.seller_country, self._stopping
        )
        if report is None:
            return None
        report = with_profile(
            report, parsed.profile, einvoice=folder.send_by_einvoice, today=self._today()
        )
        return Read(invoice=recorded(parsed, report), rules=judge(folder.rules, report))
