"""Log lines stay printable whatever the file names are."""

from __future__ import annotations

import io
import json
from pathlib import Path

import structlog

from daemon import logs


def test_undecodable_names_do_not_break_either_format():
    for fmt in ("console", "json"):
        buf = io.StringIO()
        logs.configure(fmt, "info", stream=buf)
        structlog.get_logger().info(
            "file_queued", path=Path("/in/facture-\udce9.pdf"), twin_of=Path("/in/\udcff.pdf")
        )
        text = buf.getvalue()
        if fmt == "json":
            assert json.loads(text)["path"] == "/in/facture-\\xe9.pdf"
        else:
            assert "facture-\\xe9.pdf" in text
        structlog.reset_defaults()
