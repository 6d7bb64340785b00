"""`check-config --online`: one authenticated, read-only request per organization."""

from __future__ import annotations

import asyncio

import aiohttp

from .config import Config
from .errors import AuthProblem, JournalError, QontoError
from .journal import Journal
from .lock import InstanceLock
from .oauth import TokenSource
from .qonto import probe
from .redact import Redactor


async def check(cfg: Config) -> list[str]:
    """The problems found (empty when every organization answered)."""
    problems: list[str] = []
    redact = Redactor(cfg.secret_values())
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=cfg.upload.connect_timeout_s)
    oauth = [org for org in cfg.organizations if org.oauth is not None]
    lock = InstanceLock(cfg.database)
    # A refresh rotates the token: only while no daemon runs, and stored as `run` would.
    own_lock = bool(oauth) and await asyncio.to_thread(lock.acquire)
    journal = None
    try:
        if own_lock:
            journal = await Journal.open(cfg.database)
    except JournalError as exc:
        lock.release()
        return [f"{exc}: {exc.hint}"]
    try:
        async with aiohttp.ClientSession() as session:
            for org in cfg.organizations:
                tokens = None
                if org.oauth is not None:
                    if journal is None:
                        problems.append(
                            f"organization {org.login}: OAuth not checked online while a "
                            "daemon runs (a refresh would rotate its token)"
                        )
                        continue
                    tokens = TokenSource(org, session, journal, redact, timeout)
                try:
                    await probe(session, org, timeout, redact, tokens)
                except AuthProblem as exc:
                    problems.append(f"organization {org.login}: {exc} ({exc.hint})")
                except QontoError as exc:
                    problems.append(f"organization {org.login}: {org.base_url} answered {exc}")
    finally:
        if journal is not None:
            await journal.close()
        lock.release()
    return problems
