"""Qonto's answers sorted into what the caller must do: the one place a status decides.

Callers decide by type (errors.py), never by HTTP status. Everything a server
says is cleaned of secrets (it may echo our headers) before it reaches a message.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import AuthProblem, QontoError, Rejected, Transient, Unmatched
from ..redact import NOTHING, Redactor
from .multipart import Upload, escaped, name_key

_SNIPPET_CHARS = 200
_READ_FOR_ERRORS = 65536  # what of an error body is read for its message

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


def classify_einvoice(
    status: int, headers: Mapping[str, str], errors: list[dict[str, object]], snippet: str
) -> QontoError:
    """An answer of the e-invoicing calls (send_by_einvoice, GET client_invoices/{id}).

    Qonto does not document their refusals: 401/403 pause the organization,
    408/429/5xx (and 3xx) are tried again, and any other refusal (an unreachable
    client, e-invoicing not activated, an invoice deleted: 404) is Rejected with
    Qonto's own detail, for a person to act on; it is not retried by itself.
    """
    if status in (401, 403):
        problem = classify_http(status, headers, errors, snippet)
        assert isinstance(problem, AuthProblem)
        if status == 403:
            problem.hint = (
                "the key lacks the client_invoice.write or client_invoices.read permission, "
                "or e-invoicing is not available to this organization"
            )
        return problem
    if 400 <= status < 500 and status not in TRANSIENT_STATUSES:
        first = errors[0] if errors else {}
        code = str(first.get("code") or "")
        detail = str(first.get("detail") or first.get("title") or snippet or "no detail given")
        label = f"HTTP {status}" + (f" {code}" if code else "")
        return Rejected(f"{label}: {detail}", status=status, code=code or "refused", detail=detail)
    return classify_http(status, headers, errors, snippet)


def classify_http(
    status: int, headers: Mapping[str, str], errors: list[dict[str, object]], snippet: str
) -> QontoError:
    """Turn a non-200 answer into the error that says what to do next.

    `errors` is the JSON:API `errors` list when the body had one; `snippet` is
    a short, printable start of the body for the log.
    """
    first = errors[0] if errors else {}
    code = str(first.get("code") or "")
    detail = str(first.get("detail") or first.get("title") or snippet or "no detail given")
    label = f"HTTP {status}" + (f" {code}" if code else "")
    if status == 401:
        return AuthProblem(
            f"{label}: {detail}",
            status=status,
            hint="the login or secret key is wrong, revoked or expired: "
            "check [qonto] login and the secret key source",
        )
    if status == 403:
        return AuthProblem(
            f"{label}: {detail}",
            status=status,
            hint="the key lacks the client_invoice.write permission, or the organization "
            "cannot use bulk import (Italian organizations cannot)",
        )
    if status in REJECTING_STATUSES:
        return Rejected(f"{label}: {detail}", status=status, code=code or "rejected", detail=detail)
    retry_after_s = parse_retry_after(headers.get("Retry-After"))
    if status in TRANSIENT_STATUSES or status >= 500:
        return Transient(f"{label}: {detail}", status=status, retry_after_s=retry_after_s)
    # 3xx (the sandbox's login redirect), 404, and anything else undocumented:
    # nothing was imported as far as we know, so wait and try again.
    return Transient(
        f"unexpected {label}: {detail}", status=status, retry_after_s=retry_after_s
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


def parse_errors(raw: bytes, redact: Redactor) -> list[dict[str, Any]]:
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


def parse_success(raw: bytes, content_type: str, redact: Redactor) -> list[tuple[str, str]]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Transient(
            f"HTTP 200 but the body is not JSON ({redact(content_type) or 'no content type'}): "
            f"{snippet(raw, redact)!r}; with the sandbox, check staging_token_env",
            status=200,
        ) from None
    items = doc.get("client_invoices") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise Transient(
            f"HTTP 200 without a client_invoices list: {snippet(raw, redact)!r}", status=200
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


