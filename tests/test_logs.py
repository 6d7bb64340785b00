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


def test_what_python_would_print_raw_becomes_json_lines(capsys):
    """An exception in a thread, one ignored in a destructor, an exception logged
    with its traceback: every line stays one JSON object."""
    import gc
    import sys
    import threading

    import structlog

    from daemon import logs

    out = io.StringIO()
    hooks = threading.excepthook, sys.unraisablehook
    logs.configure("json", "debug", stream=out)
    try:
        failing = threading.Thread(target=lambda: 1 / 0, name="worker-x")
        failing.start()
        failing.join()

        class Broken:
            def __del__(self) -> None:
                raise RuntimeError("in a destructor")

        Broken()
        gc.collect()
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger().error("daemon_failed", exc_info=True)
    finally:
        structlog.reset_defaults()
        threading.excepthook, sys.unraisablehook = hooks
    lines = out.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is JSON
    said = " ".join(json.dumps(p) for p in parsed)
    for part in ("worker-x", "ZeroDivisionError", "in a destructor", "boom"):
        assert part in said, part
    failed = next(p for p in parsed if p["event"] == "daemon_failed")
    assert isinstance(failed["exception"], list)  # structured, not a block of text
    assert "Traceback" not in capsys.readouterr().err
