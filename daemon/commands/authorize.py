"""`authorize`: Qonto's OAuth consent, once, for the first refresh token.

It prints Qonto's authorization URL (with `offline_access`, without which
there is no refresh token, and the scopes this daemon uses), receives the
redirect on a local port, exchanges the code at `token_url`, and keeps the
refresh token in the journal (so `run` starts from it) and, with `--write`,
in a file readable by its owner alone (for `refresh_token_file`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from ..config import Config, Organization
from ..journal import Journal
from .common import EX_CONFIG, EX_FAILED, EX_OK

SCOPES = ("offline_access", "organization.read", "client_invoice.write", "client_invoices.read",
          "einvoicing.read", "client.read")
_WAIT_S = 600.0  # Qonto's authorization codes live 10 minutes: so does the wait


def authorization_url(org: Organization, redirect_uri: str, state: str, base: str | None) -> str:
    assert org.oauth is not None
    page = base or org.oauth.token_url.removesuffix("/token") + "/auth"
    query = {"client_id": org.oauth.client_id, "redirect_uri": redirect_uri,
             "response_type": "code", "scope": " ".join(SCOPES), "state": state}
    return f"{page}?{urlencode(query)}"


async def authorize(
    cfg: Config, login: str, *, port: int, write: Path | None, page: str | None
) -> int:
    org = next((o for o in cfg.organizations if o.login == login), None)
    if org is None or org.oauth is None:
        print(f"qonto-invoice-daemon: authorize: {login} is not an organization with "
              'auth = "oauth" in this configuration', file=sys.stderr)
        return EX_CONFIG
    state = secrets.token_urlsafe(24)
    code: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        if request.query.get("state") != state:
            return web.Response(status=400, text="This is not the answer to our request.")
        if "code" not in request.query:
            error = request.query.get("error", "no code")
            if not code.done():
                code.set_exception(RuntimeError(f"Qonto answered {error}"))
            return web.Response(text=f"Qonto answered: {error}. Nothing was stored.")
        if not code.done():
            code.set_result(request.query["code"])
        return web.Response(text="Done: you can close this window.")

    app = web.Application()
    app.router.add_get("/callback", callback)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = runner.addresses[0][1]
        redirect_uri = f"http://127.0.0.1:{bound}/callback"
        print("Open this address in a browser, sign in to Qonto and allow access:", flush=True)
        print(authorization_url(org, redirect_uri, state, page), flush=True)
        print(f"(waiting for Qonto's redirect to {redirect_uri}: register it for this "
              "OAuth client in Qonto's developer portal)", file=sys.stderr, flush=True)
        try:
            granted = await asyncio.wait_for(code, _WAIT_S)
        except (TimeoutError, RuntimeError) as exc:
            print(f"qonto-invoice-daemon: authorize: {exc or 'no answer within 10 minutes'}",
                  file=sys.stderr)
            return EX_FAILED
    finally:
        await runner.cleanup()
    refresh = await _exchange(org, granted, redirect_uri)
    if refresh is None:
        return EX_FAILED
    configured = hashlib.sha256(refresh.encode()).hexdigest()
    journal = await Journal.open(cfg.database)
    try:
        # Stored as the token of a configuration that names it: `run` starts from it.
        await journal.store_refresh_token(org.key, refresh, configured)
    finally:
        await journal.close()
    if write is not None:
        _write_private(write, refresh)
        print(f"refresh token written to {write} (mode 0600)")
    print(f"refresh token of {login} stored in the journal {cfg.database}")
    return EX_OK


async def _exchange(org: Organization, code: str, redirect_uri: str) -> str | None:
    assert org.oauth is not None
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": org.oauth.client_id, "client_secret": org.oauth.client_secret.reveal()}
    headers = {"Accept": "application/json"}
    if org.staging_token is not None:
        headers["X-Qonto-Staging-Token"] = org.staging_token.reveal()
    try:
        async with aiohttp.ClientSession() as session, session.post(
            org.oauth.token_url, data=form, headers=headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            status, raw = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"qonto-invoice-daemon: authorize: the token endpoint did not answer: "
              f"{type(exc).__name__}", file=sys.stderr)
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    refresh = doc.get("refresh_token") if isinstance(doc, dict) else None
    if status != 200 or not isinstance(refresh, str) or not refresh:
        error = doc.get("error") if isinstance(doc, dict) else None
        print(f"qonto-invoice-daemon: authorize: the token endpoint answered HTTP {status}"
              f" ({error or 'no refresh token: was offline_access granted?'})", file=sys.stderr)
        return None
    return refresh


def _write_private(path: Path, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(token + "\n")
