"""Qonto's answers sorted into what the caller must do: the one place a status decides.

Callers decide by type (errors.py), never by HTTP status. Everything a server
says is cleaned of secrets (it may echo our headers) before it reaches a message.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import AuthProblem, NotYet, QontoError, Rejected, Transient, Unmatched
from ..redact import NOTHING, Redactor
from .multipart import Upload, escaped, name_key

_SNIPPET_CHARS = 200
_READ_FOR_ERRORS = 65536  # what of an error body is read for its message
_TRACE_CHARS = 100

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REJECTING_STATUSES = frozenset({400, 413, 415, 422})


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class ErrorBody:
    """What an error answer says, cleaned of secrets: its JSON:API errors, Qonto's
    trace_id, and a short start of the body for a message."""

    errors: list[dict[str, str]]
    trace_id: str | None
    snippet: str

    @property
    def code(self) -> str:
        return str(self.errors[0].get("code") or "") if self.errors else ""

    @property
    def detail(self) -> str:
        first = self.errors[0] if self.errors else {}
        return str(first.get("detail") or first.get("title") or self.snippet or "no detail given")

    def label(self, status: int) -> str:
        return f"HTTP {status}" + (f" {self.code}" if self.code else "")


def error_body(raw: bytes, redact: Redactor) -> ErrorBody:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    trace = doc.get("trace_id") if isinstance(doc, dict) else None
    trace_id = redact(trace)[:_TRACE_CHARS] if isinstance(trace, str) and trace else None
    return ErrorBody(parse_errors(doc, redact), trace_id, snippet(raw, redact))


# Refusals of the e-invoicing call that waiting can fix (Qonto's codes as real
# clients of its API report them): the client is not registered yet.
_CLIENT_NOT_REACHABLE = ("recipient_not_reachable", "not_reachable", "client_not_reachable")


def classify_einvoice(status: int, headers: Mapping[str, str], body: ErrorBody) -> QontoError:
    """An answer of the e-invoicing calls (send_by_einvoice, the reads before and after).

    Nothing here concerns uploads: a 401/403 holds the organization's
    e-invoicing (e-invoicing not activated, a key without the scope), a client
    not reachable holds that invoice; both are checked again later. 408/429/5xx
    (and 3xx) are tried again; any other refusal is Rejected with Qonto's own
    detail, for a person to act on.
    """
    label, detail, trace_id = body.label(status), body.detail, body.trace_id
    if status in (401, 403):
        return NotYet(
            f"{label}: {detail}", status=status, held_for="organization", trace_id=trace_id,
            hint="check in Qonto that e-invoicing is activated for the organization and that "
            "the key (or OAuth consent) may send e-invoices; it is tried again by itself",
        )
    if status == 412 and any(c in body.code for c in _CLIENT_NOT_REACHABLE):
        return NotYet(
            f"{label}: {detail}", status=status, held_for="client", trace_id=trace_id,
            hint="the client is not yet reachable on the e-invoicing network (not in the "
            "directory): it is sent by itself once the client is; or send it another way",
        )
    if 400 <= status < 500 and status not in TRANSIENT_STATUSES:
        return Rejected(f"{label}: {detail}", status=status, code=body.code or "refused",
                        detail=detail, trace_id=trace_id)
    return classify_http(status, headers, body)


def classify_http(status: int, headers: Mapping[str, str], body: ErrorBody) -> QontoError:
    """Turn an answer that is not a success into the error that says what to do next."""
    label, detail, trace_id = body.label(status), body.detail, body.trace_id
    if status == 401:
        return AuthProblem(
            f"{label}: {detail}",
            status=status, trace_id=trace_id,
            hint="the login or secret key is wrong, revoked or expired: "
            "check [qonto] login and the secret key source",
        )
    if status == 403:
        return AuthProblem(
            f"{label}: {detail}",
            status=status, trace_id=trace_id,
            hint="the key lacks the client_invoice.write permission, or the organization "
            "cannot use bulk import (Italian organizations cannot)",
        )
    if status in REJECTING_STATUSES:
        return Rejected(f"{label}: {detail}", status=status, code=body.code or "rejected",
                        detail=detail, trace_id=trace_id)
    retry_after_s = parse_retry_after(headers.get("Retry-After"))
    if status in TRANSIENT_STATUSES or status >= 500:
        return Transient(f"{label}: {detail}", status=status, retry_after_s=retry_after_s,
                         trace_id=trace_id)
    # 3xx (the sandbox's login redirect), 404, and anything else undocumented:
    # nothing was imported as far as we know, so wait and try again.
    return Transient(
        f"unexpected {label}: {detail}", status=status, retry_after_s=retry_after_s,
        trace_id=trace_id,
    )


def describe(exc: BaseException, redact: Redactor) -> str:
    text = redact(str(exc) or type(exc).__name__)  # cleaned before it is cut
    return text if len(text) < 300 else text[:300] + "..."


def snippet(raw: bytes, redact: Redactor) -> str:
    """A short, one-line, secret-free start of a body for a message.

    Cleaned before it is cut, so that no secret is ever cut in two (and half shown).
    """
    text = redact(raw[:_READ_FOR_ERRORS].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text[:_SNIPPET_CHARS]


def parse_errors(doc: object, redact: Redactor) -> list[dict[str, str]]:
    """The JSON:API `errors` of a parsed body, every value cleaned text."""
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


def parse_success(
    raw: bytes, content_type: str, redact: Redactor, status: int = 200
) -> list[tuple[str, str]]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Transient(
            f"HTTP {status} but the body is not JSON "
            f"({redact(content_type) or 'no content type'}): "
            f"{snippet(raw, redact)!r}; with the sandbox, check staging_token_env",
            status=status,
        ) from None
    items = doc.get("client_invoices") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise Transient(
            f"HTTP {status} without a client_invoices list: {snippet(raw, redact)!r}",
            status=status,
        )
    results: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            raise Transient(
                f"HTTP 200 with a malformed result: {snippet(raw, redact)!r}", status=200
            )
        invoice_id, name = item.get("invoice_id"), item.get("file_name")
        if not isinstance(invoice_id, str) or not invoice_id or not isinstance(name, str):
            raise Transient(
                "HTTP 200 with a result lacking invoice_id or file_name: "
                f"{snippet(raw, redact)!r}",
                status=200,
            )
        results.append((name, invoice_id))
    return results


def match(
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
        for form in (f.file_name, escaped(f.file_name)):
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


