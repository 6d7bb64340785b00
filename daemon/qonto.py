"""The HTTP client for `POST /v2/client_invoices/bulk`.

It turns a list of (name, bytes) into a name -> invoice_id mapping or raises
one of the errors in `errors.py`. It knows nothing of folders or SQLite.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from . import __version__
from .config import Organization
from .errors import Transient, Unmatched, classify_einvoice, classify_http
from .redact import NOTHING, Redactor
from .throttle import RateLimiter

BULK_PATH = "/v2/client_invoices/bulk"
LIST_PATH = "/v2/client_invoices"
FIELD = "client_invoices"
_BOUNDARY_LEN = 32  # aiohttp's own: uuid4().hex
_SNIPPET_CHARS = 200
_READ_FOR_ERRORS = 65536  # what of an error body is read for its message
_EINVOICE_SHARE = 0.5
_SLICE_BYTES = 1 << 16


@dataclass(frozen=True)
class Upload:
    file_name: str  # as made by upload_name()
    data: bytes
    content_type: str


def upload_name(name: str) -> str:
    """The name Qonto will know a file by: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _escaped(name: str) -> str:
    """How browsers put a name in Content-Disposition (WHATWG form encoding)."""
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def name_key(name: str) -> str:
    """Names that a server could take for the same one.

    Two names are one on the wire when they escape alike (`q"a.pdf` and
    `q%22a.pdf`) or normalise alike (Unicode NFC): such files never share a request.
    """
    return unicodedata.normalize("NFC", _escaped(name))


class _Slices(payload.Payload):
    """A file's bytes written in slices of a view: the event loop is never held by
    a 5 MB write, and no copy is made (aiohttp's BytesIOPayload copies the buffer)."""

    _value: bytes
    _autoclose = True  # in memory: nothing to close

    def __init__(self, value: bytes, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._value

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        for start in range(0, len(view), _SLICE_BYTES):
            await writer.write(view[start : start + _SLICE_BYTES])


def _part(file_name: str, data: bytes, content_type: str) -> payload.Payload:
    part = _Slices(data, content_type=content_type)
    part.set_content_disposition(
        "form-data", quote_fields=False, name=FIELD, filename=_escaped(file_name)
    )
    return part


def build_body(files: Sequence[Upload], boundary: str | None = None) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data", boundary=boundary)
    for f in files:
        writer.append_payload(_part(f.file_name, f.data, f.content_type))
    return writer


def part_overhead(file_name: str, content_type: str) -> int:
    """Bytes a file adds to the request body beyond its own content."""
    writer = aiohttp.MultipartWriter("form-data", boundary="b" * _BOUNDARY_LEN)
    empty = writer.size
    writer.append_payload(_part(file_name, b"", content_type))
    size = writer.size
    assert empty is not None and size is not None
    return size - empty


def body_size(parts: Iterable[tuple[str, str, int]]) -> int:
    """The exact multipart body size for (file_name, content_type, size) parts."""
    closing = len(b"--") + _BOUNDARY_LEN + len(b"--\r\n")
    return closing + sum(part_overhead(n, t) + size for n, t, size in parts)


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

    async def upload(self, files: Sequence[Upload]) -> dict[str, str]:
        """Send 1-5 files in one request; return file_name -> invoice_id for each.

        Raises Transient, Rejected, AuthProblem or Unmatched. With OAuth, a 401
        is answered once by a fresh access token and the same request.
        """
        status, raw, headers = await self._post(files)
        if status == 401 and self._tokens is not None:
            self._tokens.invalidate()
            status, raw, headers = await self._post(files)
        if status == 200:
            parsed = _parse_success(raw, headers.get("Content-Type", ""), self._redact)
            return _match(files, parsed, self._redact)
        errors = _parse_errors(raw, self._redact)
        headers = {k: self._redact(v) for k, v in headers.items()}
        raise classify_http(status, headers, errors, _snippet(raw, self._redact))

    async def _post(self, files: Sequence[Upload]) -> tuple[int, bytes, dict[str, str]]:
        return await self._request("POST", self._url, data=build_body(files))

    async def send_by_einvoice(self, invoice_id: str) -> None:
        """Ask Qonto to send an imported invoice by e-invoice (204: accepted).

        Raises what classify_einvoice says: Transient, AuthProblem, or Rejected.
        """
        url = f"{self._org.base_url}{LIST_PATH}/{quote(invoice_id, safe='')}/send_by_einvoice"
        status, raw, headers = await self._einvoice_call("POST", url)
        if not 200 <= status < 300:
            raise self._einvoice_error(status, raw, headers)

    async def client_invoice(self, invoice_id: str) -> dict[str, Any]:
        """`GET /v2/client_invoices/{id}`: the invoice, its e-invoicing status and events."""
        url = f"{self._org.base_url}{LIST_PATH}/{quote(invoice_id, safe='')}"
        status, raw, headers = await self._einvoice_call("GET", url)
        if status != 200:
            raise self._einvoice_error(status, raw, headers)
        try:
            found = json.loads(raw)["client_invoice"]
            if not isinstance(found, dict):
                raise TypeError("not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise Transient(
                f"unreadable answer ({type(exc).__name__}): {_snippet(raw, self._redact)}"
            ) from None
        return found

    async def _einvoice_call(self, method: str, url: str) -> tuple[int, bytes, dict[str, str]]:
        # Half of each rate-limit window at most: uploads keep the rest.
        status, raw, headers = await self._request(method, url, share=_EINVOICE_SHARE)
        if status == 401 and self._tokens is not None:
            self._tokens.invalidate()
            status, raw, headers = await self._request(method, url, share=_EINVOICE_SHARE)
        return status, raw, headers

    def _einvoice_error(self, status: int, raw: bytes, headers: dict[str, str]) -> Exception:
        headers = {k: self._redact(v) for k, v in headers.items()}
        return classify_einvoice(
            status, headers, _parse_errors(raw, self._redact), _snippet(raw, self._redact)
        )

    async def _request(
        self,
        method: str,
        url: str,
        data: aiohttp.MultipartWriter | None = None,
        *,
        share: float = 1.0,
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
                headers=request_headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                headers = {k: v for k, v in resp.headers.items()}
        except TimeoutError:
            raise Transient(f"no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            # `from None`: the cause's text and headers never ride along in a traceback.
            raise Transient(f"connection failed: {_describe(exc, self._redact)}") from None
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
    client = QontoClient(session, org, timeout, redact, tokens)
    try:
        async with session.get(
            org.base_url + LIST_PATH, params={"per_page": "1"}, headers=await client._headers(),
            timeout=timeout, allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            status = resp.status
            headers = {k: redact(v) for k, v in resp.headers.items()}
    except TimeoutError:
        raise Transient(f"no answer within {timeout.total:g} s") from None
    except aiohttp.ClientError as exc:
        raise Transient(f"connection failed: {_describe(exc, redact)}") from None
    if status == 200:
        return
    raise classify_http(status, headers, _parse_errors(raw, redact), _snippet(raw, redact))


def _describe(exc: BaseException, redact: Redactor) -> str:
    text = redact(str(exc) or type(exc).__name__)  # cleaned before it is cut
    return text if len(text) < 300 else text[:300] + "..."


def _snippet(raw: bytes, redact: Redactor) -> str:
    """A short, one-line, secret-free start of a body for a message.

    Cleaned before it is cut, so that no secret is ever cut in two (and half shown).
    """
    text = redact(raw[:_READ_FOR_ERRORS].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text[:_SNIPPET_CHARS]


def _parse_errors(raw: bytes, redact: Redactor) -> list[dict[str, Any]]:
    try:
        doc = json.loads(raw)
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return []
    # Every value becomes cleaned text: a proxy may nest what it echoes in objects.
    return [
        {
            k: redact(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in e.items()
        }
        for e in errors
        if isinstance(e, dict)
    ]


def _parse_success(raw: bytes, content_type: str, redact: Redactor) -> list[tuple[str, str]]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Transient(
            f"HTTP 200 but the body is not JSON ({redact(content_type) or 'no content type'}): "
            f"{_snippet(raw, redact)!r}; with the sandbox, check staging_token_env",
            status=200,
        ) from None
    items = doc.get("client_invoices") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise Transient(
            f"HTTP 200 without a client_invoices list: {_snippet(raw, redact)!r}", status=200
        )
    results: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            raise Transient(
                f"HTTP 200 with a malformed result: {_snippet(raw, redact)!r}", status=200
            )
        invoice_id, name = item.get("invoice_id"), item.get("file_name")
        if not isinstance(invoice_id, str) or not invoice_id or not isinstance(name, str):
            raise Transient(
                "HTTP 200 with a result lacking invoice_id or file_name: "
                f"{_snippet(raw, redact)!r}",
                status=200,
            )
        results.append((name, invoice_id))
    return results


def _match(
    files: Sequence[Upload], results: list[tuple[str, str]], redact: Redactor = NOTHING
) -> dict[str, str]:
    """Tie each result to the one file it names; anything ambiguous is an error."""
    if len(files) == 1 and len(results) == 1:
        # One file, one answer: whatever the server made of the name, it is ours.
        return {files[0].file_name: results[0][1]}
    if len(files) == 1:
        raise Transient(f"HTTP 200 with {len(results)} results for 1 file", status=200)
    exact: dict[str, str] = {}
    loose: dict[str, str] = {}
    for f in files:
        for form in (f.file_name, _escaped(f.file_name)):
            exact[form] = f.file_name
            loose[name_key(form)] = f.file_name
    found: dict[str, str] = {}
    for name, invoice_id in results:
        ours = exact.get(name) or loose.get(name_key(name))
        if ours is None or ours in found:
            raise Unmatched(
                f"HTTP 200 names {redact(repr(name))}, which matches no file sent "
                "(or matches one twice)",
                status=200,
            )
        found[ours] = invoice_id
    if len(found) != len(files):
        missing = sorted(set(exact.values()) - set(found))
        raise Unmatched(f"HTTP 200 without a result for {missing}", status=200)
    return found

