"""`check-config --online`: one authenticated, read-only request per organization."""

from __future__ import annotations

import aiohttp

from .config import Config
from .errors import AuthProblem, QontoError
from .qonto import probe
from .redact import Redactor


async def check(cfg: Config) -> list[str]:
    """The problems found (empty when every organization answered)."""
    problems: list[str] = []
    redact = Redactor(cfg.secret_values())
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=cfg.upload.connect_timeout_s)
    async with aiohttp.ClientSession() as session:
        for org in cfg.organizations:
            if org.oauth is not None:
                # A refresh here would rotate the token under a running daemon: not checked.
                continue
            try:
                await probe(session, org, timeout, redact)
            except AuthProblem as exc:
                problems.append(f"organization {org.login}: {exc} ({exc.hint})")
            except QontoError as exc:
                problems.append(f"organization {org.login}: {org.base_url} answered {exc}")
    return problems
