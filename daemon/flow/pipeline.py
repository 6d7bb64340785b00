"""The stages of a file's journey, built in its order and run as one set of tasks.

Each stage is given, when it is made, the later stages it hands files to and
the books it reports to; nothing is wired afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import aiohttp

from .. import qonto
from ..config import Config
from ..journal import Journal
from ..notify import Notifier
from ..oauth import TokenSource
from ..parsers import ParserPool
from ..qonto import QontoClient, RateLimiter, Slots
from ..redact import Redactor
from ..timing import DEFAULT, Intervals
from ..validator import RulesPool
from .batcher import Limits
from .books import Books
from .discover import Discovery
from .einvoice import Einvoicing
from .filing import Filing
from .intake import Intake
from .orgs import Org
from .progress import Progress
from .reading import Reader
from .settle import Settled, Settler, Unfinished, settle_loop
from .upload import OrgUploader

# Intake workers beyond the parsers: files that need no parse (images, plain
# reading and hashing) go on while every parser is busy.
_READERS = 2


class Pipeline:
    def __init__(
        self,
        config: Config,
        *,
        journal: Journal,
        session: aiohttp.ClientSession,
        parsers: ParserPool | None,
        rules: RulesPool | None = None,
        notify: Notifier,
        stopping: asyncio.Event,
        redact: Redactor,
        once: bool,
        intervals: Intervals = DEFAULT,
    ) -> None:
        cfg = self.config = config
        self._once = once
        self._stopping = stopping
        self._journal = journal
        self._parsers = parsers
        timeout = aiohttp.ClientTimeout(
            total=cfg.upload.timeout_s, sock_connect=cfg.upload.connect_timeout_s
        )
        limiter = RateLimiter()
        # The token endpoint has its own time limit: a hanging one is given up on
        # sooner than an upload of 15 MB would be.
        token_timeout = aiohttp.ClientTimeout(
            total=min(30.0, cfg.upload.timeout_s), sock_connect=cfg.upload.connect_timeout_s
        )
        self.tokens = {
            org.key: TokenSource(org, session, journal, redact, token_timeout)
            for org in cfg.organizations if org.oauth is not None
        }
        self.orgs = {
            org.key: Org(
                org.key,
                QontoClient(session, org, timeout, redact, self.tokens.get(org.key), limiter),
                journal, cfg.upload, give_up_on_auth=once,
                unreachable_alert_s=cfg.unreachable_alert_s, base_url=org.base_url,
            )
            for org in cfg.organizations
        }
        self.settler = Settler(cfg.watch.settle_s, cfg.watch.unstable_warning_s)
        unfinished = Unfinished(
            cfg.watch.incomplete_fail_s, recheck_s=max(cfg.watch.settle_s, 1.0)
        )
        self.books = Books(self.settler, unfinished)
        self.discovery = Discovery(cfg, self.books, stopping, intervals=intervals)
        reader = Reader(parsers, rules, stopping)
        parsing = {f.inbox for f in cfg.folders if reader.parses(f)}
        self.settled = Settled(
            lambda path: path.parent in parsing and path.suffix.lower() == ".pdf"
        )
        filing = Filing(journal)
        limits = Limits(
            max_request_bytes=cfg.upload.max_request_bytes, closing_bytes=qonto.body_size([])
        )
        slots = Slots(cfg.upload.concurrency)
        self.uploads = {
            key: OrgUploader(
                org=org, journal=journal, books=self.books, filing=filing,
                settings=cfg.upload, limits=limits, slots=slots, stopping=stopping,
            )
            for key, org in self.orgs.items()
        }
        self.intake = Intake(
            cfg, journal=journal, books=self.books, settled=self.settled,
            unfinished=unfinished, filing=filing, uploads=self.uploads, orgs=self.orgs,
            limits=limits,
            reader=reader, stopping=stopping, once=once, intervals=intervals,
        )
        self.einvoicing = Einvoicing(
            journal=journal, orgs=self.orgs, settings=cfg.einvoicing, upload=cfg.upload,
            stopping=stopping, folders=cfg.folders, intervals=intervals,
        )
        self.progress = Progress(
            books=self.books, settler=self.settler, settled=self.settled, intake=self.intake,
            uploads=self.uploads, orgs=self.orgs, notify=notify, heartbeat_s=cfg.heartbeat_s,
            intervals=intervals,
        )

    @property
    def idle(self) -> bool:
        """Every file found has been dealt with (`run --once`)."""
        return (
            self.books.idle and self.intake.idle and all(u.idle for u in self.uploads.values())
        )

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The long-lived tasks, by name: they end when the daemon stops."""
        stopping = self._stopping
        tasks: dict[str, Coroutine[Any, Any, None]] = {
            "rescan": self.discovery.rescan_loop(once=self._once),
            "settle": settle_loop(self.settler, self.books, self.settled, stopping),
        }
        if not self._once:
            tasks["watch"] = self.discovery.watch_loop()
        # As many intake workers as parsers may wait for one; the readers never do.
        parsing = self.config.validation.parse_workers
        tasks.update({f"intake-{n}": self.intake.run(may_parse=True) for n in range(parsing)})
        tasks.update({f"reader-{n}": self.intake.run(may_parse=False)
                      for n in range(_READERS)})
        tasks.update({f"upload-{key}": up.run() for key, up in self.uploads.items()})
        if self._parsers is not None:
            # Supervised too: a stop is not held up by a parser slow to start.
            tasks["parsers"] = self._parsers.warm()
        if not self._once:
            tasks["einvoicing"] = self.einvoicing.run()
        if not self._once:
            # OAuth tokens stay fresh when no file comes for weeks.
            tasks.update({f"oauth-{key}": tokens.keep_fresh(stopping)
                          for key, tokens in self.tokens.items()})
        tasks["commits"] = self._journal.keep_committed(stopping)
        tasks["progress"] = self.progress.loop(stopping)
        return tasks

    async def drain(self) -> None:
        """Wait for answers already received to be recorded (after a forced stop)."""
        for up in self.uploads.values():
            await up.drain()
