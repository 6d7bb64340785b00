"""Keeping secrets out of everything the daemon writes.

A proxy's error page or a misbehaving server may echo the request headers,
and with them the API key. Any text that came from a server passes through a
Redactor before it reaches an exception, the journal, a sidecar or a log line;
the log pipeline applies it once more to every line as a last guard.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Iterable

MASK = "[redacted]"


# A secret this short also occurs inside ordinary words ("file" in "file_imported"):
# it is masked only where it stands as a whole token, never in the middle of a word.
_SHORT = 12


class Redactor:
    """Replaces every configured secret, in the forms a server might echo it, by MASK."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._forms: list[str] = []
        self._short: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """One more secret to hide (an OAuth token, as soon as it is issued)."""
        if not secret:
            return
        forms = set(self._forms)
        forms.update((
            secret,
            html.escape(secret),
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret, safe=""),
            json.dumps(secret)[1:-1],
        ))
        # Longest first, so that a secret containing another is masked whole.
        self._forms = sorted(forms, key=len, reverse=True)
        short = [f for f in self._forms if len(f) < _SHORT]
        self._short = re.compile(
            r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, short)) + r")(?![A-Za-z0-9_])"
        ) if short else None

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if len(form) >= _SHORT and form in text:
                text = text.replace(form, MASK)
        if self._short is not None:
            text = self._short.sub(MASK, text)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)


NOTHING = Redactor(())
