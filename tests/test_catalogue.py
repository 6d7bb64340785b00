"""The README's event catalogue names every event the daemon logs, and no other.

Users build monitoring on these names: an event missing from the catalogue is
one nobody knows to watch for.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Every way the daemon names an event: a logger's method, a chosen method
# ((log.error if ... else log.debug)("...")), a helper that logs for its caller.
PATTERNS = [
    r'\b(?:log|bound|logger)\.(?:debug|info|warning|error|critical|exception)\(\s*"(\w+)"',
    r'get_logger\(\)\.(?:debug|info|warning|error|critical)\(\s*"(\w+)"',
    r'\)\(\s*"(\w+)"',
    r'warn_once\([^,]+,\s*"(\w+)"',
    r'emit\(\s*"(\w+)"',
    r'event: str = "(\w+)"',
    r'event="(\w+)"',
    r'bound, "(\w+)"\)',
]


def logged() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in (ROOT / "daemon").rglob("*.py"):
        if "testing" in path.parts:  # the emulator is no part of the daemon
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in PATTERNS:
            for match in re.finditer(pattern, text):
                found.setdefault(match.group(1), path)
    return found


def catalogue() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Log events"):]
    section = section[: section.index("\n## ", 1)]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`(\w+)`", line.split("|")[1]))
    return names


def test_the_walk_finds_the_daemon_s_events():
    events = logged()
    assert {"file_imported", "file_duplicate", "file_move_failed", "einvoice_send_retry",
            "library_message", "file_skipped", "qonto_unreachable"} <= set(events)


def test_every_event_logged_is_in_the_readme_catalogue():
    missing = {name: str(path) for name, path in logged().items() if name not in catalogue()}
    assert not missing, f"log events missing from the README's catalogue: {missing}"


def test_the_catalogue_names_no_event_the_daemon_never_logs():
    stale = catalogue() - set(logged())
    assert not stale, f"catalogued but never logged: {sorted(stale)}"
