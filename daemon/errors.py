"""Every failure the daemon can meet, sorted into what the caller must do about it.

Callers decide by type, never by HTTP status: `classify_http` is the one place
where a status code becomes a decision.
"""

from __future__ import annotations

import errno


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
    """A request to Qonto did not produce a result for every file sent.

    `trace_id` is what Qonto's support asks for: Qonto puts it in every error
    answer, and it is kept wherever the error is (the log, the journal, reports).
    """

    def __init__(
        self, message: str, *, status: int | None = None, trace_id: str | None = None
    ) -> None:
        super().__init__(message if trace_id is None else f"{message} (trace_id {trace_id})")
        self.status = status
        self.trace_id = trace_id


class Transient(QontoError):
    """Try the same request again later (network, 429, 5xx, an answer we cannot read)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, trace_id=trace_id)
        self.retry_after_s = retry_after_s


class Rejected(QontoError):
    """The server refused the request's content (400, 413, 422).

    Requests are all-or-nothing, so with several files this only says that one
    of them is bad: the caller splits the batch to find which.
    """

    def __init__(
        self, message: str, *, status: int, code: str, detail: str, trace_id: str | None = None
    ) -> None:
        super().__init__(message, status=status, trace_id=trace_id)
        self.code = code
        self.detail = detail


class NotYet(QontoError):
    """An e-invoice Qonto will not send now, for a reason that can go away by itself:
    the client is not reachable on the e-invoicing network yet (`client`), or the
    organization cannot send e-invoices yet (`organization`)."""

    def __init__(
        self, message: str, *, status: int, held_for: str, hint: str,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, trace_id=trace_id)
        self.held_for = held_for
        self.hint = hint


class Unmatched(QontoError):
    """A 200 whose results cannot be tied to the files sent, name for name.

    Sending the files again in smaller requests is safe (the endpoint is
    idempotent by content) and a one-file answer always matches.
    """


class AuthProblem(QontoError):
    """The organization's credentials or rights do not allow the upload (401, 403).

    Nothing is failed: the organization pauses and tries again later.
    """

    def __init__(
        self, message: str, *, status: int, hint: str, trace_id: str | None = None
    ) -> None:
        super().__init__(message, status=status, trace_id=trace_id)
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
