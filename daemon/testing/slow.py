"""Stand-ins that are slower than the real thing, for tests of time limits."""

from __future__ import annotations

import time
from pathlib import Path

from ..parsers import warm_up
from ..rulesets import RuleSet
from ..schematron import Report


def slow_parser_start() -> int:
    """A parser process that takes 1.5 s to start (a loaded machine, a cold disk)."""
    time.sleep(1.5)
    return warm_up()


def check_that_signals(xml: bytes, marker: str | None, seller_country: str | None) -> Report:
    """A rules check that stalls the first time (creating the file `marker` names, in
    place of a profile, so that a test knows it started) and answers at once after."""
    path = Path(marker or "")
    if path.exists():
        return Report(checked=(RuleSet.FACTURX,))
    path.touch()
    time.sleep(120)
    return Report()
