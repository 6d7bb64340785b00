"""The redactor masks a secret in every form a server page might echo it."""

from __future__ import annotations

import html
import json
import urllib.parse

from daemon.redact import MASK, Redactor


def test_every_echoed_form_is_masked():
    secret = "k&y+/<s3cr3t>"
    redact = Redactor([secret, "other-t0ken"])
    for form in (secret, html.escape(secret), urllib.parse.quote(secret, safe=""),
                 urllib.parse.quote_plus(secret), json.dumps(secret)[1:-1]):
        text = f"Authorization: acme:{form}; X-Qonto-Staging-Token: other-t0ken"
        cleaned = redact(text)
        assert "s3cr3t" not in cleaned and "t0ken" not in cleaned, form
        assert cleaned.count(MASK) == 2


def test_nothing_to_hide_changes_nothing():
    assert Redactor([])("HTTP 502 Bad Gateway") == "HTTP 502 Bad Gateway"
    assert not Redactor([""])


def test_a_short_secret_is_masked_as_a_whole_token_never_inside_words():
    redact = Redactor(["file", "ab1"])
    assert redact("file_imported path=/srv/file.pdf") == "file_imported path=/srv/[redacted].pdf"
    assert redact("Authorization: file") == "Authorization: [redacted]"
    assert redact("key=ab1&x=ab12 cab1") == "key=[redacted]&x=ab12 cab1"
    long = Redactor(["s3cr3t-key-0123456789"])  # a real key: masked wherever it appears
    assert long("xs3cr3t-key-0123456789y") == "x[redacted]y"
