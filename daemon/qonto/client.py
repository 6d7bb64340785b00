"""The HTTP client for Qonto: the bulk import, the e-invoicing calls, the probe.

It turns a list of (name, bytes) into a name -> invoice_id mapping or raises
one of the errors in `errors.py`. It knows nothing of folders or SQLite.
Every request goes through `_request`: the rate limits, the headers, the
network's failures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from .. import __version__
from ..bodies import read_bounded
from ..config import Organization
from ..errors import AuthProblem, NotYet, Transient
from ..redact import NOTHING, Redactor
from .classify import (
    classify_einvoice,
    classify_http,
    describe,
    error_body,
    match,
    parse_success,
    snippet,
)
from .limits import RateLimiter
from .multipart import Upload, build_body

BULK_PATH = "/v2/client_invoices/bulk"
LIST_PATH = "/v2/client_invoices"
SETTINGS_PATH = "/v2/einvoicing/settings"
CLIENTS_PATH = "/v2/clients"
_EINVOICE_SHARE = 0.5


_PARSE_HERE = 64 * 1024  # a larger answer is parsed in a thread


class QontoClient:
    """Uploads for one organization through a shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        org: Organization,
        timeout: aiohttp.ClientTimeout,
        redact: Redactor = NOTHING,
        tokens: Tokens | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._session = session
        self._org = org
        self._timeout = timeout
        self._url = org.base_url + BULK_PATH
        # Whatever a server says may echo our headers: it is cleaned before it goes anywhere.
        self._redact = redact
        self._tokens = tokens  # OAuth; None with an API key
        # Shared by every organization: Qonto counts requests per IP address.
        self._limiter = limiter

    async def _headers(self) -> dict[str, str]:
        if self._tokens is not None:
            authorization = await self._tokens.header()
        else:
            assert self._org.secret is not None
            authorization = f"{self._org.login}:{self._org.secret.reveal()}"
        headers = {
            "Authorization": authorization,
            "Accept": "application/json",
            "User-Agent": f"qonto-invoice-daemon/{__version__}",
        }
        if self._org.staging_token is not None:
            headers["X-Qonto-Staging-Token"] = self._org.staging_token.reveal()
        return headers

    async def authorize(self) -> None:
        """Make sure of a fresh OAuth access token (nothing to do with an API key).

        Called before a request takes one of the shared upload slots: a token
        endpoint that hangs holds up this organization only, within its own time
        limit. Raises AuthProblem or Transient as the request would.
        """
        if self._tokens is not None:
            await self._tokens.header()

    async def upload(self, files: Sequence[Upload]) -> dict[str, str]:
        """Send 1-5 files in one request; return file_name -> invoice_id for each.

        Raises Transient, Rejected, AuthProblem or Unmatched. With OAuth, a 401
        is answered once by a fresh access token and the same request. Any 2xx
        with the documented body is a success; without it, it is not.
        """
        status, raw, headers = await self._post(files)
        if status == 401 and self._tokens is not None:
            self._tokens.invalidate()
            status, raw, headers = await self._post(files)
        if 200 <= status < 300:
            parsed = parse_success(raw, headers.get("Content-Type", ""), self._redact, status)
            return match(files, parsed, self._redact)
        raise classify_http(status, self._clean(headers), error_body(raw, self._redact))

    async def _post(self, files: Sequence[Upload]) -> tuple[int, bytes, dict[str, str]]:
        return await self._request("POST", self._url, data=build_body(files))

    async def send_by_einvoice(self, invoice_id: str) -> None:
        """Ask Qonto to send an imported invoice by e-invoice (204: accepted).

        Raises what classify_einvoice says: Transient, NotYet, or Rejected. A 2xx
        whose body is not empty nor JSON (a sandbox's login page) is not an answer.
        """
        url = f"{self._org.base_url}{LIST_PATH}/{quote(invoice_id, safe='')}/send_by_einvoice"
        status, raw, headers = await self._einvoice_call("POST", url)
        if not 200 <= status < 300:
            raise self._einvoice_error(status, raw, headers)
        if raw.strip():
            await self._json(raw, status)

    async def client_invoice(self, invoice_id: str) -> dict[str, Any]:
        """`GET /v2/client_invoices/{id}`: the invoice, its client, its e-invoicing status
        and events."""
        url = f"{self._org.base_url}{LIST_PATH}/{quote(invoice_id, safe='')}"
        return await self._read(url, "client_invoice")

    async def einvoicing_settings(self) -> dict[str, Any]:
        """`GET /v2/einvoicing/settings`: whether the organization may send e-invoices
        (`sending_status`)."""
        return await self._read(self._org.base_url + SETTINGS_PATH, "einvoicing_settings")

    async def client(self, client_id: str) -> dict[str, Any]:
        """`GET /v2/clients/{id}`: the client, `e_invoicing_reachable` among its fields."""
        url = f"{self._org.base_url}{CLIENTS_PATH}/{quote(client_id, safe='')}"
        return await self._read(url, "client")

    async def _read(self, url: str, key: str) -> dict[str, Any]:
        """A read of the e-invoicing family: the object under `key` (or the document
        itself when it has no such key), or the error that says what to do."""
        status, raw, headers = await self._einvoice_call("GET", url)
        if not 200 <= status < 300:
            raise self._einvoice_error(status, raw, headers)
        doc = await self._json(raw, status)
        found = doc.get(key, doc)
        if not isinstance(found, dict):
            raise Transient(f"HTTP {status} without a {key} object: {snippet(raw, self._redact)}",
                            status=status)
        return found

    async def _json(self, raw: bytes, status: int) -> dict[str, Any]:
        try:
            # A large answer is parsed off the event loop: other folders go on.
            doc = json.loads(raw) if len(raw) < _PARSE_HERE else await asyncio.to_thread(
                json.loads, raw
            )
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise Transient(
                f"HTTP {status} but not the documented JSON: {snippet(raw, self._redact)!r}; "
                "with the sandbox, check staging_token_env",
                status=status,
            )
        return doc

    async def _einvoice_call(self, method: str, url: str) -> tuple[int, bytes, dict[str, str]]:
        # Half of each rate-limit window at most: uploads keep the rest.
        try:
            status, raw, headers = await self._request(method, url, share=_EINVOICE_SHARE)
            if status == 401 and self._tokens is not None:
                self._tokens.invalidate()
                status, raw, headers = await self._request(method, url, share=_EINVOICE_SHARE)
        except AuthProblem as exc:
            # The OAuth token itself was refused: e-invoicing waits for the organization,
            # as for any refusal of its calls (uploads say it for themselves).
            raise NotYet(str(exc), status=exc.status or 401, held_for="organization",
                         hint=exc.hint, trace_id=exc.trace_id) from None
        return status, raw, headers

    def _einvoice_error(self, status: int, raw: bytes, headers: dict[str, str]) -> Exception:
        return classify_einvoice(status, self._clean(headers), error_body(raw, self._redact))

    def _clean(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: self._redact(v) for k, v in headers.items()}

    async def probe(self) -> None:
        """One authenticated, read-only request: the first page of client invoices.

        Only the documented answer (a `client_invoices` list) is a success.
        """
        status, raw, headers = await self._request(
            "GET", self._org.base_url + LIST_PATH, params={"per_page": "1"}
        )
        if not 200 <= status < 300:
            raise classify_http(status, self._clean(headers), error_body(raw, self._redact))
        if not isinstance((await self._json(raw, status)).get("client_invoices"), list):
            raise Transient(
                f"HTTP {status} without a client_invoices list: {snippet(raw, self._redact)!r}",
                status=status,
            )

    async def _request(
        self,
        method: str,
        url: str,
        data: aiohttp.MultipartWriter | None = None,
        *,
        share: float = 1.0,
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request to the API, within the rate limits; network trouble is Transient."""
        if self._limiter is not None:  # first: a token fetched now is fresh when used
            await self._limiter.acquire(share)
        request_headers = await self._headers()
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                params=params,
                headers=request_headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                headers = {k: v for k, v in resp.headers.items()}
                raw = await read_bounded(resp)
        except TimeoutError:
            raise Transient(f"no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            # `from None`: the cause's text and headers never ride along in a traceback.
            raise Transient(f"connection failed: {describe(exc, self._redact)}") from None
        return status, raw, headers


class Tokens(Protocol):
    """Where an OAuth organization's Authorization header comes from (oauth.TokenSource)."""

    async def header(self) -> str: ...

    def invalidate(self) -> None: ...


async def probe(
    session: aiohttp.ClientSession,
    org: Organization,
    timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 -- aiohttp's own, passed through
    redact: Redactor = NOTHING,
    tokens: Tokens | None = None,
) -> None:
    """One authenticated, read-only request (the first page of client invoices).

    Raises what an upload would: AuthProblem for a refused key, Transient otherwise.
    """
    await QontoClient(session, org, timeout, redact, tokens).probe()
