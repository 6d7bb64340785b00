"""Every failure the daemon can meet, sorted into what the caller must do about it.

Callers decide by type, never by HTTP status: `classify_http` is the one place
where a status code becomes a decision.
"""

from __future__ import annotations

import email.utils
import errno
import time
from collections.abc import Mapping


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class JournalError(Exception):
    """The journal cannot be used; the message names [database] path and what to do.

    `temporary` (a full disk) may clear by itself: systemd may restart the
    daemon. Otherwise a person must act, and restarting in a loop would not help.
    """

    def __init__(self, path: object, problem: str, hint: str, *, temporary: bool = False) -> None:
        super().__init__(f"[database] path {path}: {problem}")
        self.path = path
        self.problem = problem
        self.hint = hint
        self.temporary = temporary


class AlreadyRunning(Exception):
    """Another daemon runs on the same journal (and so the same folders)."""


class JournalUnavailable(Exception):
    """A journal write was still refused (a full disk) when the daemon stopped."""


class QontoError(Exception):
    """A request to Qonto did not produce a result for every file sent."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Transient(QontoError):
    """Try the same request again later (network, 429, 5xx, an answer we cannot read)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class Rejected(QontoError):
    """The server refused the request's content (400, 413, 422).

    Requests are all-or-nothing, so with several files this only says that one
    of them is bad: the caller splits the batch to find which.
    """

    def __init__(self, message: str, *, status: int, code: str, detail: str) -> None:
        super().__init__(message, status=status)
        self.code = code
        self.detail = detail


class Unmatched(QontoError):
    """A 200 whose results cannot be tied to the files sent, name for name.

    Sending the files again in smaller requests is safe (the endpoint is
    idempotent by content) and a one-file answer always matches.
    """


class AuthProblem(QontoError):
    """The organization's credentials or rights do not allow the upload (401, 403).

    Nothing is failed: the organization pauses and tries again later.
    """

    def __init__(self, message: str, *, status: int, hint: str) -> None:
        super().__init__(message, status=status)
        self.hint = hint


class UnsafeFile(Exception):
    """A path that is not a plain regular file (symlink, FIFO, device, directory...)."""


class FileChanged(Exception):
    """The file is no longer the one that was judged (rewritten, replaced, or being written)."""


def os_hint(exc: OSError, folder: object) -> str:
    """What a person can do about a filesystem error met while writing into `folder`."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left" if code == errno.ENOSPC else "the disk quota is exhausted"
        return f"{what} on the filesystem of {folder}: free some space"
    if code == errno.ENAMETOOLONG:
        return f"the file's name is too long for the filesystem of {folder}: rename the file"
    if code == errno.EROFS:
        return f"{folder} is on a read-only filesystem: remount it read-write"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"the daemon's user may not write in {folder} or remove the file from its inbox: "
            "fix the permissions"
        )
    if code == errno.EIO:
        return f"input/output error on {folder}: check the disk or the network share"
    return f"check {folder} and its filesystem"


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
