"""A local stand-in for Qonto's bulk import endpoint, for `demo` and the tests.

It enforces what the API documents: API-key and OAuth authentication, the
sandbox's staging token, 1-5 files of at most 5 MB in at most 15 MB, PDF/JPEG/PNG
only, all-or-nothing requests, idempotency by content, JSON:API errors. Faults
can be injected (429, 5xx, dropped connections before or after the invoices
are created, slow answers, a 401 window, forbidden organizations, a server
that normalises names). The running daemon never imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html
import random
import sys
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web

from ..flow.examine import sniff
from .answers import Refusal, drop, dump, error
from .einvoicing import DEFAULT_LIFECYCLE, Client, EinvoicingRoutes, Invoice, Sent
from .oauth import OAuthRoutes

BULK_PATH = "/v2/client_invoices/bulk"
LIST_PATH = "/v2/client_invoices"
TOKEN_PATH = "/oauth2/token"
AUTHORIZE_PATH = "/oauth2/auth"
STATE_PATH = "/_emulator/invoices"
REQUESTS_PATH = "/_emulator/requests"
SEND_PATH = "/v2/client_invoices/{id}/send_by_einvoice"
INVOICE_PATH = "/v2/client_invoices/{id}"
SETTINGS_PATH = "/v2/einvoicing/settings"
ORGANIZATION_PATH = "/v2/organization"
CLIENT_PATH = "/v2/clients/{id}"
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Log in</body></html>"


@dataclass
class Faults:
    """What goes wrong, and how often (probabilities per request, 0 to 1)."""

    rate_limited: float = 0.0  # 429
    retry_after_s: float | None = None  # sent with 429 when set
    server_error: float = 0.0  # 500/502/503/504
    server_error_first: int = 0  # the first N requests get a 5xx, whatever the odds
    drop_before: float = 0.0  # connection closed before anything is created
    drop_after: float = 0.0  # invoices created, then the connection is closed
    slow: float = 0.0  # invoices created, then the answer waits slow_s
    slow_s: float = 0.0
    reject_marker: bytes | None = None  # files containing it are refused with 422
    unauthorized: bool = False  # every request answers 401 while set
    forbidden_logins: set[str] = field(default_factory=set)  # answer 403 (Italian orgs)
    normalize_names: str | None = None  # "NFC" or "NFD": file_name as a server might store it
    # A proxy or server that echoes the request headers (the API key among them)
    # in its error answers and in an HTML page for 5xx.
    echo_headers: bool = False
    # A distant server: a bulk request is answered this long after it arrives, the
    # emulator's own work included (its CPU is not the client's time). The upload of
    # a large body also falls inside it: timings of large files would flatter.
    latency_s: float = 0.0
    held: asyncio.Event | None = None  # requests are answered once this is set



class Emulator(EinvoicingRoutes, OAuthRoutes):
    def __init__(
        self,
        keys: dict[str, str],
        *,
        bearer_tokens: dict[str, str] | None = None,
        staging_token: str | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        max_files: int = 5,
        max_file_bytes: int = 5_000_000,
        max_request_bytes: int = 15_000_000,
    ) -> None:
        self.keys = dict(keys)  # login -> secret key
        self.bearer_tokens = dict(bearer_tokens or {})  # token -> login
        self.staging_token = staging_token
        self.faults = faults or Faults()
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.max_request_bytes = max_request_bytes
        self.invoices: dict[tuple[str, str], Invoice] = {}
        # OAuth: client_id -> (secret, login); live refresh tokens -> (client_id, login).
        self.oauth_clients: dict[str, tuple[str, str]] = {}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}
        # A rotated refresh token still works this long (Qonto: 60 s), so that a
        # client killed before it stored the new one is not locked out.
        self.refresh_grace_s = 60.0
        self._rotated: dict[str, tuple[tuple[str, str], float]] = {}
        self.access_lifetime_s = 3600.0
        self._access_expiry: dict[str, float] = {}
        self.refreshes = 0
        # Broken token endpoints, for tests: fields that replace those of a good answer,
        # and an error page that quotes the request (and so the refresh token).
        self.token_quirks: dict[str, object] = {}
        self.token_error_page = False
        self.token_hangs: set[str] = set()  # client ids whose token requests never end
        self._codes: dict[str, tuple[str, str, str]] = {}  # code -> client, login, redirect
        self.consents: list[dict[str, str]] = []  # each consent page asked for
        self.requests = 0
        self.statuses: dict[int, int] = {}
        # E-invoicing: its own faults, the invoices sent, how fast lifecycles move.
        self.einvoice_faults = Faults()
        self.einvoice_requests = 0
        self.sent: dict[str, Sent] = {}  # invoice_id -> its submission (only one each)
        self.contents: dict[str, bytes] = {}  # invoice_id -> the file imported
        self.lifecycle_step_s = 1.0
        self.lifecycle: tuple[int, ...] = DEFAULT_LIFECYCLE
        self.lifecycles: dict[str, tuple[int, ...]] = {}  # per invoice_id, overriding
        self.einvoicing_statuses: dict[str, str] = {}  # per invoice_id, overriding the codes
        self.einvoicing_status_always: str | None = None
        self.sending_status: dict[str, str] = {}  # per login; "enabled" when absent
        self.clients: dict[str, Client] = {}
        self.client_of: dict[str, str] = {}
        self.restricted_reads: set[str] = set()
        # Each bulk request as it arrived: (wall-clock time, status, file names).
        self.log: list[tuple[float, int, list[str]]] = []
        # Each bulk request whose files were read: (files, body bytes as sent).
        self.bodies: list[tuple[int, int]] = []
        self._rng = random.Random(seed)

    # -- what the tests look at -----------------------------------------------------

    def invoices_of(self, login: str) -> dict[str, str]:
        """sha256 -> invoice_id for one organization."""
        return {i.sha256: i.invoice_id for i in self.invoices.values() if i.login == login}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request_bytes * 2)
        app.router.add_post(BULK_PATH, self._bulk)
        app.router.add_get(LIST_PATH, self._list)
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get(AUTHORIZE_PATH, self._authorize)
        app.router.add_get(STATE_PATH, self._state)
        app.router.add_get(REQUESTS_PATH, self._requests)
        app.router.add_post(SEND_PATH, self._send_by_einvoice)
        app.router.add_get(INVOICE_PATH, self._client_invoice)
        app.router.add_get(SETTINGS_PATH, self._settings)
        app.router.add_get(ORGANIZATION_PATH, self._organization)
        app.router.add_get(CLIENT_PATH, self._client)
        return app

    async def _organization(self, request: web.Request) -> web.Response:
        """`GET /v2/organization`: the organization the credentials belong to."""
        login = self._authenticate(request.headers.get("Authorization", ""))
        if login is None or self.faults.unauthorized:
            return self._fail(request, 401, "unauthorized",
                              "The authentication credentials are invalid.")
        org_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"qonto-org:{login}"))
        return web.json_response({"organization": {
            "id": org_id, "slug": login, "legal_name": login.rsplit("-", 1)[0].upper(),
            "bank_accounts": [],
        }})

    async def _list(self, request: web.Request) -> web.Response:
        """The first page of an organization's client invoices (what a probe reads)."""
        login = self._authenticate(request.headers.get("Authorization", ""))
        if login is None or self.faults.unauthorized:
            return self._fail(request, 401, "unauthorized",
                              "The authentication credentials are invalid.")
        mine = [i for i in self.invoices.values() if i.login == login]
        page = [{"id": i.invoice_id} for i in mine[: int(request.query.get("per_page", "100"))]]
        return web.json_response({"client_invoices": page, "meta": {"total_count": len(mine)}})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "invoices": [i.__dict__ for i in self.invoices.values()],
            }
        )

    # -- the endpoint ---------------------------------------------------------------

    async def _requests(self, request: web.Request) -> web.Response:
        """The request log, from entry `since` on (for the benchmarks)."""
        since = int(request.query.get("since", "0"))
        return web.json_response({"count": len(self.log), "requests": self.log[since:]})

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        arrived = time.time()
        loop = asyncio.get_running_loop()
        answer_at = loop.time() + self.faults.latency_s
        names: list[str] = []
        response = await self._answer(request, names)
        if (wait_s := answer_at - loop.time()) > 0:
            await asyncio.sleep(wait_s)
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        self.log.append((arrived, response.status, names))
        return response

    async def _answer(self, request: web.Request, names: list[str]) -> web.StreamResponse:
        faults = self.faults
        if faults.held is not None:
            await faults.held.wait()
        if self.staging_token is not None and (
            request.headers.get("X-Qonto-Staging-Token") != self.staging_token
        ):
            # What the real sandbox does: its login page, with a 200.
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        login = self._authenticate(request.headers.get("Authorization", ""))
        if login is None or faults.unauthorized:
            return self._fail(
                request, 401, "unauthorized", "The authentication credentials are invalid."
            )
        if login in faults.forbidden_logins:
            return self._fail(
                request, 403, "forbidden", "Bulk import is not available for this organization."
            )
        if self.requests <= faults.server_error_first:
            return self._servererror(request)
        roll = self._rng.random()
        for chance, status in ((faults.rate_limited, 429), (faults.server_error, 0)):
            if roll < chance:
                if status == 429:
                    headers = {}
                    if faults.retry_after_s is not None:
                        headers["Retry-After"] = f"{faults.retry_after_s:g}"
                    return self._fail(request, 429, "too_many_requests", "Rate limit exceeded.",
                                      headers)
                return self._servererror(request)
            roll -= chance
        if roll < faults.drop_before:
            return drop(request)
        roll -= faults.drop_before

        if request.content_length is not None and request.content_length > self.max_request_bytes:
            return self._fail(request, 413, "request_too_large", "The request body exceeds 15 MB.")
        try:
            files = await self._read_files(request, names)
        except Refusal as refusal:
            return refusal.response
        self.bodies.append((len(files), request.content_length or 0))
        created = self._import(login, files)

        if roll < faults.drop_after:
            return drop(request)
        roll -= faults.drop_after
        if roll < faults.slow:
            await asyncio.sleep(faults.slow_s)
        return web.json_response({"client_invoices": created})

    def _servererror(self, request: web.Request) -> web.Response:
        status = self._rng.choice((500, 502, 503, 504))
        if self.faults.echo_headers:
            return web.Response(
                status=status, content_type="text/html",
                text="<html><body><h1>Bad Gateway</h1><p>Your request:</p><pre>"
                f"{html.escape(dump(request))}</pre></body></html>",
            )
        return error(status, "internal_server_error", "Something went wrong.")

    def _fail(
        self,
        request: web.Request,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        *,
        pointer: str | None = None,
    ) -> web.Response:
        if self.faults.echo_headers:
            detail = f"{detail} Request was: {dump(request)}"
        return error(status, code, detail, headers, pointer=pointer)

    def _authenticate(self, header: str) -> str | None:
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :]
            expiry = self._access_expiry.get(token)
            if expiry is not None and asyncio.get_running_loop().time() > expiry:
                return None  # expired: 401
            return self.bearer_tokens.get(token)
        login, sep, secret = header.partition(":")
        if sep and login in self.keys and self.keys[login] == secret:
            return login
        return None

    async def _read_files(
        self, request: web.Request, names: list[str]
    ) -> list[tuple[str, bytes]]:
        def refuse(status: int, code: str, detail: str, pointer: str | None = None) -> Refusal:
            return Refusal(self._fail(request, status, code, detail, pointer=pointer))

        if not request.content_type.startswith("multipart/form-data"):
            raise refuse(400, "invalid_request_format", "Expected multipart/form-data.")
        reader = await request.multipart()
        files: list[tuple[str, bytes]] = []
        total = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or part.name != "client_invoices":
                raise refuse(422, "invalid", "Unexpected form field.", pointer="/")
            data = await part.read(decode=False)
            total += len(data)
            if total > self.max_request_bytes:
                raise refuse(413, "request_too_large", "The request exceeds 15 MB.")
            files.append((part.filename or "", bytes(data)))
            names.append(part.filename or "")
        if not files:
            raise refuse(422, "missing_field", "client_invoices is required.")
        if len(files) > self.max_files:
            raise refuse(422, "invalid", f"At most {self.max_files} files per request.")
        for index, (name, data) in enumerate(files):
            pointer = f"/client_invoices/{index}"
            if len(data) > self.max_file_bytes:
                raise refuse(422, "invalid", f"{name} exceeds 5 MB.", pointer)
            if sniff(data) is None:
                raise refuse(422, "invalid_format", f"{name}: unsupported format.", pointer)
            marker = self.faults.reject_marker
            if marker is not None and marker in data:
                raise refuse(422, "invalid", f"{name}: the invoice number is missing.", pointer)
        return files

    def _import(self, login: str, files: Sequence[tuple[str, bytes]]) -> list[dict[str, str]]:
        """All files were accepted: create (or find) an invoice for each."""
        created: list[dict[str, str]] = []
        for name, data in files:
            sha = hashlib.sha256(data).hexdigest()
            invoice = self.invoices.get((login, sha))
            if invoice is None:
                invoice = Invoice(login, sha, str(uuid.uuid4()), name)
                self.contents[invoice.invoice_id] = data
                self.invoices[(login, sha)] = invoice
                self.add_client_of(invoice.invoice_id, data)
            shown = name
            if self.faults.normalize_names:
                shown = unicodedata.normalize(self.faults.normalize_names, name)  # type: ignore[arg-type]
            created.append({"invoice_id": invoice.invoice_id, "file_name": shown})
        return created


@asynccontextmanager
async def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve the emulator on loopback; yields its base URL."""
    runner = web.AppRunner(
        emulator.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m daemon.emulator --login L --secret S`: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m daemon.emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--login", action="append", required=True)
    parser.add_argument("--secret", action="append", required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="answer a bulk request this long after it arrives (default 0)")
    parser.add_argument("--oauth-client", action="append", default=[],
                        metavar="LOGIN:CLIENT_ID:CLIENT_SECRET",
                        help="an OAuth client; its first refresh token is printed on stderr")
    parser.add_argument("--access-lifetime-s", type=float, default=3600.0,
                        help="how long an OAuth access token lives (default 3600)")
    parser.add_argument("--lifecycle-step-ms", type=float, default=1000.0,
                        help="an e-invoice's next lifecycle code comes this much later")
    parser.add_argument("--server-errors", type=float, default=0.0, metavar="P",
                        help="the share of bulk requests answered with a 5xx (0 to 1)")
    parser.add_argument("--rate-limited", type=float, default=0.0, metavar="P",
                        help="the share of bulk requests answered with a 429 (0 to 1)")
    args = parser.parse_args(argv)
    if len(args.login) != len(args.secret):
        parser.error("give one --secret per --login")
    emulator = Emulator(
        dict(zip(args.login, args.secret, strict=True)),
        faults=Faults(latency_s=args.latency_ms / 1000, server_error=args.server_errors,
                      rate_limited=args.rate_limited),
    )
    emulator.access_lifetime_s = args.access_lifetime_s
    emulator.lifecycle_step_s = args.lifecycle_step_ms / 1000
    clients = []
    for spec in args.oauth_client:
        login, _, rest = spec.partition(":")
        client_id, _, client_secret = rest.partition(":")
        if not (login and client_id and client_secret):
            parser.error("--oauth-client takes LOGIN:CLIENT_ID:CLIENT_SECRET")
        clients.append((login, client_id, emulator.add_oauth_client(login, client_id,
                                                                    client_secret)))

    async def forever() -> None:
        async with serve(emulator, args.host, args.port) as url:
            # The base URL alone on stdout: what a script that asked for port 0 reads.
            print(url, flush=True)
            print(f"Qonto emulator on {url}{BULK_PATH}", file=sys.stderr, flush=True)
            for login, client_id, refresh in clients:
                print(f"OAuth client {client_id} of {login}: token URL {url}{TOKEN_PATH}, "
                      f"first refresh token {refresh}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
