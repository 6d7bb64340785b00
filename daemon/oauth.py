"""OAuth 2.0 access tokens with rotating refresh tokens, kept durably in the journal.

Qonto's refresh tokens rotate: each refresh returns a new one and the old one
dies. The new one is committed to the journal before the access token it came
with is used, so a restart (even after a SIGKILL right after a refresh) starts
from the newest. The token in the configuration is used only while the journal
holds none descended from it: putting a new token there (a new consent) is how
an operator replaces it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from typing import Any, Protocol

import aiohttp
import structlog

from .bodies import read_bounded
from .config import Organization
from .errors import AuthProblem, Transient
from .redact import Redactor

log = structlog.get_logger()


class TokenStore(Protocol):
    """Where the newest refresh token is kept durably (the journal)."""

    async def refresh_token(self, org: str) -> tuple[str, str] | None: ...

    async def store_refresh_token(self, org: str, token: str, configured: str) -> None: ...
ORGANIZATION_PATH = "/v2/organization"
_EARLY_S = 300.0  # refresh this long before expiry (or at a fifth of a short lifetime)
# A token's lifetime as the endpoint states it is believed within these bounds; 0 or
# a negative one (which would refresh, and rotate, before every request) is nonsense.
_LIFETIME_S = (1.0, 86400.0)
_DEFAULT_LIFETIME_S = 3600.0
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token


def _lifetime(stated: object) -> float:
    """`expires_in` as a number of seconds within bounds; a default when it is none."""
    if isinstance(stated, bool) or not isinstance(stated, int | float | str):
        return _DEFAULT_LIFETIME_S
    try:
        seconds = float(stated)
    except ValueError:  # "3600s"
        return _DEFAULT_LIFETIME_S
    if not math.isfinite(seconds) or seconds <= 0:
        return _DEFAULT_LIFETIME_S
    return min(max(seconds, _LIFETIME_S[0]), _LIFETIME_S[1])


class TokenSource:
    """The Authorization header of one OAuth organization."""

    def __init__(
        self,
        org: Organization,
        session: aiohttp.ClientSession,
        journal: TokenStore,
        redact: Redactor,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        assert org.oauth is not None
        self._org = org
        self._oauth = org.oauth
        self._session = session
        self._journal = journal
        self._redact = redact
        self._timeout = timeout
        self._access: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._verified = False  # the token's organization was checked (GET /v2/organization)

    async def header(self) -> str:
        async with self._lock:
            if self._access is None or time.monotonic() >= self._refresh_at:
                await self._refresh()
            assert self._access is not None
            return f"Bearer {self._access}"

    async def keep_fresh(self, stopping: asyncio.Event, retry_s: float = 60.0) -> None:
        """Refresh before expiry whether or not requests come: a quiet folder must not
        let the refresh-token chain lapse (refresh tokens die after 90 days unused)."""
        failing = False
        while not stopping.is_set():
            try:
                await self.header()
            except AuthProblem as exc:
                if not failing:
                    log.error("oauth_refresh_failed", org=self._org.key, error=str(exc),
                              hint=exc.hint)
                failing = True
                wait_s = 10 * retry_s
            except Transient as exc:
                log.warning("oauth_refresh_failed", org=self._org.key, error=str(exc),
                            hint="tried again in a minute")
                wait_s = retry_s
            else:
                failing = False
                wait_s = max(1.0, self._refresh_at - time.monotonic())
            try:
                async with asyncio.timeout(wait_s):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def _call(
        self, method: str, url: str, what: str, **kwargs: Any
    ) -> tuple[int, bytes]:
        """(status, body) of one request; no answer is Transient, named by `what`."""
        try:
            async with self._session.request(
                method, url, timeout=self._timeout, allow_redirects=False, **kwargs
            ) as resp:
                return resp.status, await read_bounded(resp)
        except TimeoutError:
            raise Transient(f"{what} did not answer") from None
        except aiohttp.ClientError as exc:
            raise Transient(
                f"{what}: connection failed: {self._redact(str(exc))[:300]}"
            ) from None

    async def _check_organization(self, access: str) -> None:
        """The token must be the configured organization's: with another one's, its
        invoices would be created in that organization's account. Once per run, at
        the first token (a new consent means a restart). A mismatch pauses the
        organization (AuthProblem); a token that may not read it is said, not held."""
        headers = {"Authorization": f"Bearer {access}", "Accept": "application/json"}
        if self._org.staging_token is not None:
            headers["X-Qonto-Staging-Token"] = self._org.staging_token.reveal()
        status, raw = await self._call(
            "GET", self._org.base_url + ORGANIZATION_PATH, "GET /v2/organization",
            headers=headers,
        )
        if status in (401, 403, 404):
            self._verified = True
            log.warning(
                "oauth_org_unverified", org=self._org.key, status=status,
                hint="the token may not read its organization (scope organization.read): "
                "make a new one with `authorize` so that the daemon can check whose it is",
            )
            return
        if not 200 <= status < 300:
            raise Transient(f"GET /v2/organization answered HTTP {status}", status=status)
        try:
            found = json.loads(raw).get("organization", {}).get("slug")
        except (ValueError, AttributeError):
            found = None
        if not isinstance(found, str):
            raise Transient("GET /v2/organization did not say which organization", status=status)
        if found != self._org.login:
            raise AuthProblem(
                f"the OAuth token is for organization {found}, not {self._org.login}",
                status=403,
                hint=f"refresh_token_* of {self._org.login} holds a token of {found}: nothing "
                "is imported with it. Make a token for this organization with `authorize "
                f"--org {self._org.login}` (signing in to its Qonto account) and restart",
            )
        self._verified = True

    def invalidate(self) -> None:
        """A 401 with the current access token: the next header() refreshes first."""
        self._access = None

    async def _refresh(self) -> None:
        configured = self._oauth.refresh_token.reveal()
        configured_sha = hashlib.sha256(configured.encode()).hexdigest()
        stored = await self._journal.refresh_token(self._org.key)
        current = stored[0] if stored and stored[1] == configured_sha else configured
        self._redact.add(current)  # from an earlier run: a secret all the same
        form = {
            "grant_type": "refresh_token",
            "refresh_token": current,
            "client_id": self._oauth.client_id,
            "client_secret": self._oauth.client_secret.reveal(),
        }
        headers = {"Accept": "application/json"}
        if self._org.staging_token is not None:
            headers["X-Qonto-Staging-Token"] = self._org.staging_token.reveal()
        status, raw = await self._call(
            "POST", self._oauth.token_url, "the token endpoint", data=form, headers=headers
        )
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if status == 200 and isinstance(doc, dict) and doc.get("access_token"):
            new_refresh = doc.get("refresh_token")
            if isinstance(new_refresh, str) and new_refresh:
                self._redact.add(new_refresh)
                # Durable first: the old token is dead from now on.
                await self._journal.store_refresh_token(self._org.key, new_refresh, configured_sha)
            access = doc["access_token"]
            if isinstance(access, str):
                self._redact.add(access)
            if not isinstance(access, str) or not _TOKEN.fullmatch(access):
                # CR/LF, spaces or a non-string: it cannot go in a header, and would
                # break every request. The token endpoint is broken; try again later.
                raise Transient("the token endpoint answered an access token that is not a "
                                "bearer token (RFC 6750 characters only)")
            if not self._verified:
                await self._check_organization(access)
            self._access = access
            lifetime_s = _lifetime(doc.get("expires_in"))
            self._refresh_at = time.monotonic() + lifetime_s - min(_EARLY_S, lifetime_s / 5)
            log.debug("oauth_refreshed", org=self._org.key, expires_in_s=lifetime_s)
            return
        error = doc.get("error") if isinstance(doc, dict) else None
        if status in (400, 401) and error in ("invalid_grant", "invalid_client",
                                               "unauthorized_client"):
            raise AuthProblem(
                f"token endpoint refused the refresh: {error}", status=401,
                hint="the refresh token (or the client id/secret) was refused: revoked, "
                "expired after 90 days, or already used. Make a new refresh token with "
                "Qonto's consent flow (offline_access), put it in refresh_token_* and restart",
            )
        snippet = self._redact(raw[:300].decode("utf-8", "replace"))
        raise Transient(f"token endpoint answered HTTP {status}: {snippet}", status=status)
