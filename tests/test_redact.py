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
